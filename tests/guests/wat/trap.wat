;; trap.wat: a WASI command whose _start traps at once with `unreachable` (tests a guest trap).
(module
  ;; Imported (never called) so runtimes recognise the module as a WASI preview1 command.
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    unreachable))
