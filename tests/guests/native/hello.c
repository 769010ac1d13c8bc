/* hello: the native twin of hello.wasm, for comparing a wasm container's start with runc's.
 * Prints exactly what hello.wasm prints, "hello from wasm\n", so both are checked the same way. */
#include <stdio.h>

int main(void) {
    /* Fail loudly, as the wasm guest does, when stdout cannot take the line. */
    if (puts("hello from wasm") < 0 || fflush(stdout) != 0)
        return 1;
    return 0;
}
