;; oob.wat: a WASI command whose _start loads far outside its one-page memory (tests an
;; out-of-bounds memory access trap, as opposed to `unreachable`).
(module
  ;; Imported (never called) so runtimes recognise the module as a WASI preview1 command.
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; 0xFFFFFFF0 is near the top of the 4 GiB address space; memory is 64 KiB.
    (drop (i32.load (i32.const 0xFFFFFFF0)))))
