;; hello.wat: writes "hello from wat\n" to stdout with fd_write and returns from _start
;; normally, which is exit status 0 (tests a module that never calls proc_exit).
(module
  ;; fd_write(fd, iovs, iovs_len, nwritten_out) -> errno
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; The one iovec {buf = 16, len = 15} at offset 0; the text at offset 16.
  (data (i32.const 0) "\10\00\00\00\0f\00\00\00")
  (data (i32.const 16) "hello from wat\n")
  (func (export "_start")
    ;; nwritten goes to offset 8. The errno is ignored: there is nowhere to report it.
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
