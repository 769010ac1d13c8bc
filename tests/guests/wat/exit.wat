;; exit.wat: a WASI command whose _start calls proc_exit(7) (tests the exit status).
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit (i32.const 7))))
