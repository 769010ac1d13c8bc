// hello: the C twin of src/bin/hello.rs, for machines where the Rust wasm32-wasip1 target cannot
// be installed (see ../build.sh). A test compares its whole stdout with "hello from wasm\n".
#include <stdio.h>

int main(void) {
    // println! panics (a trap) when stdout cannot take the line: do the same, so a broken stdout
    // is as loud here as in the Rust guest.
    if (puts("hello from wasm") < 0 || fflush(stdout) != 0) {
        fputs("failed printing to stdout\n", stderr);
        __builtin_trap();
    }
    return 0;
}
