/* sleeper: a static native program for comparing a wasm guest with what runc gives a native
 * process under the same spec. `sleeper SECONDS` sleeps, then exits 0. */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 60;
    while (seconds > 0)
        seconds = sleep(seconds);
    return 0;
}
