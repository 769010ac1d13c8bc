;; no-start.wat: a valid WASI-importing module with memory but no `_start` export (tests that
;; the shim reports a missing entry point instead of running nothing).
(module
  ;; Imported (never called) so runtimes recognise the module as WASI; only _start is missing.
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "not_start")))
