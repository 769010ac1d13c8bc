// probe: the C twin of src/bin/probe.rs, built by ../build.sh when the Rust wasm32-wasip1 target
// cannot be installed. Everything the tests can observe is the same as the Rust guest's: the
// subcommands, every byte of their output, the exit codes, and the error line
// `error: <ErrorKind> <message>`, where the ErrorKind is the name Rust's std gives the errno and
// the message is Rust's Display of that error ("<strerror> (os error N)").
//
// Two things differ, neither asserted: a panic's text (only "probe panic" and the trap are the
// same), and the MiB count at which alloc-forever fails (the two use memory differently).
//
// Read probe.rs first: this file follows it command by command, and its comments say why each
// command works as it does. The comments here say why the C does what Rust's std did implicitly.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

// Failures that have no errno: Rust's std reports them with these kinds and texts.
enum { ERR_INVALID_UTF8 = -1, ERR_WRITE_ZERO = -2 };

static const char USAGE[] =
    "usage: probe args | env | exit N | cat | read PATH | head PATH N | isatty N | write PATH TEXT | "
    "append PATH TEXT | ls PATH | pwd | mkdir PATH | rm PATH | stat PATH | "
    "link EXISTING NEW | symlink TARGET PATH | set-mtime PATH SECS | stdout-lines N | stderr TEXT | sleep SECS | spin | sieve N | read-stdin-line | "
    "alloc-forever | panic";

// ---------------------------------------------------------------------------------------------
// Failing as the Rust guest fails

static _Noreturn void usage(void) {
    fprintf(stderr, "%s\n", USAGE);
    exit(2);
}

// A Rust panic prints its message and aborts, and abort is a wasm trap (panic = "abort").
static _Noreturn void panic_with(const char *message) {
    fprintf(stderr, "panicked: %s\n", message);
    __builtin_trap();
}

// The ErrorKind that the Rust guest's std (Rust 1.95, the machine's toolchain) gives each WASI
// errno: read off the Rust guest by printing io::Error::from_raw_os_error(0..=80).kind()
// through the shim. Some errnos one would expect to be named are Uncategorized there (ENOTEMPTY,
// ENOTCAPABLE, ENODEV, ESRCH...); newer std versions name more of them, and then this table
// must follow the toolchain.
static const char *kind_name(int err) {
    switch (err) {
    case E2BIG: return "ArgumentListTooLong";
    case EACCES: case EPERM: return "PermissionDenied";
    case EADDRINUSE: return "AddrInUse";
    case EADDRNOTAVAIL: return "AddrNotAvailable";
    case EAGAIN: return "WouldBlock";
    case EBUSY: return "ResourceBusy";
    case ECONNABORTED: return "ConnectionAborted";
    case ECONNREFUSED: return "ConnectionRefused";
    case ECONNRESET: return "ConnectionReset";
    case EDEADLK: return "Deadlock";
    case EDQUOT: return "QuotaExceeded";
    case EEXIST: return "AlreadyExists";
    case EFBIG: return "FileTooLarge";
    case EHOSTUNREACH: return "HostUnreachable";
    case EINPROGRESS: return "InProgress";
    case EINTR: return "Interrupted";
    case EINVAL: return "InvalidInput";
    case EISDIR: return "IsADirectory";
    case ELOOP: return "FilesystemLoop";
    case EMLINK: return "TooManyLinks";
    case ENAMETOOLONG: return "InvalidFilename";
    case ENETDOWN: return "NetworkDown";
    case ENETUNREACH: return "NetworkUnreachable";
    case ENOENT: return "NotFound";
    case ENOMEM: return "OutOfMemory";
    case ENOSPC: return "StorageFull";
    case ENOSYS: case ENOTSUP: return "Unsupported";
    case ENOTCONN: return "NotConnected";
    case ENOTDIR: return "NotADirectory";
    case EPIPE: return "BrokenPipe";
    case EROFS: return "ReadOnlyFilesystem";
    case ESPIPE: return "NotSeekable";
    case ESTALE: return "StaleNetworkFileHandle";
    case ETIMEDOUT: return "TimedOut";
    case ETXTBSY: return "ExecutableFileBusy";
    case EXDEV: return "CrossesDevices";
    default: return "Uncategorized";
    }
}

// Prints `error: <ErrorKind> <error>` and exits 1, after what was already printed.
static _Noreturn void fail(int err) {
    fflush(stdout);
    if (err == ERR_INVALID_UTF8)
        fputs("error: InvalidData stream did not contain valid UTF-8\n", stderr);
    else if (err == ERR_WRITE_ZERO)
        fputs("error: WriteZero failed to write whole buffer\n", stderr);
    else
        fprintf(stderr, "error: %s %s (os error %d)\n", kind_name(err), strerror(err), err);
    exit(1);
}

// The errno of a failed stdio write. std treats a closed stdout (EBADF) as a sink that takes
// everything, so that is no failure here either.
static int output_error(void) {
    if (errno == EBADF)
        return 0;
    return errno ? errno : EIO;
}

// Rust aborts when an allocation fails (except in alloc-forever, which asks not to).
static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size ? size : 1);
    if (!p)
        panic_with("memory allocation failed");
    return p;
}

// ---------------------------------------------------------------------------------------------
// Text as Rust's String sees it

// The length of the UTF-8 character at s (n > 0 bytes left), or minus the number of bytes that
// Rust's from_utf8_lossy replaces with one U+FFFD there (its Utf8Chunks rule: the longest start
// of a valid sequence, at least one byte).
static int utf8_step(const unsigned char *s, size_t n) {
    unsigned char b = s[0];
    int width = b < 0x80                ? 1
                : b >= 0xC2 && b <= 0xDF ? 2
                : b >= 0xE0 && b <= 0xEF ? 3
                : b >= 0xF0 && b <= 0xF4 ? 4
                                         : 0;
    if (width == 0)
        return -1;
    // The second byte's range excludes overlong forms, surrogates and code points past U+10FFFF.
    unsigned char lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
    unsigned char hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
    for (int i = 1; i < width; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return width;
}

static int utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int step = utf8_step((const unsigned char *)s + i, n - i);
        if (step < 0)
            return 0;
        i += (size_t)step;
    }
    return 1;
}

// A growable byte buffer, for output that must be written in one piece.
struct buf {
    char *data;
    size_t len, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

// Appends s as String::from_utf8_lossy would have it.
static void buf_add_lossy(struct buf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int step = utf8_step((const unsigned char *)s + i, n - i);
        if (step > 0)
            buf_add(b, s + i, (size_t)step);
        else
            buf_add(b, "\xEF\xBF\xBD", 3);
        i += (size_t)(step > 0 ? step : -step);
    }
}

// A NUL-terminated lossy copy of s (s itself when it is valid, which is the usual case).
static char *lossy(char *s) {
    if (utf8_valid(s, strlen(s)))
        return s;
    struct buf b = {0};
    buf_add_lossy(&b, s, strlen(s));
    buf_add(&b, "", 1);
    return b.data;
}

// ---------------------------------------------------------------------------------------------
// Output

// Writes data and flushes it; 0 or the errno of the failure.
static int print_bytes(const void *data, size_t len) {
    if (len > 0 && fwrite(data, 1, len, stdout) != len)
        return output_error();
    if (fflush(stdout) != 0)
        return output_error();
    return 0;
}

// One item per line, written and flushed as one block.
static int print_lines(char *const *items, size_t n) {
    struct buf b = {0};
    for (size_t i = 0; i < n; i++) {
        buf_add_lossy(&b, items[i], strlen(items[i]));
        buf_add(&b, "\n", 1);
    }
    int err = print_bytes(b.data, b.len);
    free(b.data);
    return err;
}

// Prints a line and flushes it at once, so a test waiting for it knows the guest got there.
static void say(const char *line) {
    printf("%s\n", line);
    fflush(stdout);
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return ERR_WRITE_ZERO;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Arguments, parsed only in the forms Rust's str::parse accepts (no spaces, no hex...)

// At least one decimal digit and nothing else, at most max.
static int parse_digits(const char *s, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        uint64_t digit = (uint64_t)(*s - '0');
        if (v > (max - digit) / 10)
            return 0;
        v = v * 10 + digit;
    }
    *out = v;
    return 1;
}

static int32_t arg_i32(const char *s) {
    int negative = *s == '-';
    if (*s == '+' || *s == '-')
        s++;
    uint64_t v;
    if (!parse_digits(s, negative ? (uint64_t)INT32_MAX + 1 : INT32_MAX, &v))
        usage();
    return negative ? (int32_t)-(int64_t)v : (int32_t)v;
}

static uint64_t arg_u64(const char *s) {
    if (*s == '+')
        s++;
    uint64_t v;
    if (!parse_digits(s, UINT64_MAX, &v))
        usage();
    return v;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

// Skips the digits at *s; how many there were.
static size_t skip_digits(const char **s) {
    const char *start = *s;
    while (is_digit(**s))
        (*s)++;
    return (size_t)(*s - start);
}

// Whether s (after its sign) is a float in Rust's grammar: inf, infinity, nan in any case, or
// decimal digits with an optional fraction and exponent. strtod alone would take more.
static int float_syntax(const char *s) {
    if (strcasecmp(s, "inf") == 0 || strcasecmp(s, "infinity") == 0 || strcasecmp(s, "nan") == 0)
        return 1;
    size_t digits = skip_digits(&s);
    if (*s == '.') {
        s++;
        digits += skip_digits(&s);
    }
    if (digits == 0)
        return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (skip_digits(&s) == 0)
            return 0;
    }
    return *s == '\0';
}

static double arg_f64(const char *s) {
    const char *unsigned_part = (*s == '+' || *s == '-') ? s + 1 : s;
    if (!float_syntax(unsigned_part))
        usage();
    return strtod(s, NULL);
}

// ---------------------------------------------------------------------------------------------
// Commands: each takes the whole NULL-terminated argv and returns 0 or an error for fail()

static int cmd_args(char **argv) {
    size_t n = 0;
    while (argv[n])
        n++;
    return print_lines(argv, n);
}

// std::env::vars_os skips entries with no '=' after their first byte (a name is never empty).
static int is_variable(const char *entry) {
    return entry[0] != '\0' && strchr(entry + 1, '=') != NULL;
}

static int cmd_env(char **argv) {
    (void)argv;
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **vars = xrealloc(NULL, n * sizeof *vars);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (is_variable(environ[i]))
            vars[kept++] = environ[i];
    int err = print_lines(vars, kept);
    free(vars);
    return err;
}

static int cmd_exit(char **argv) { exit(arg_i32(argv[2])); }

// Echoes each chunk as it arrives (not at EOF) so tests can interact with a running guest.
static int cmd_cat(char **argv) {
    (void)argv;
    static char chunk[64 * 1024];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        // std reads a closed stdin (EBADF) as an empty one.
        if (n == 0 || (n < 0 && errno == EBADF))
            break;
        if (n < 0)
            return errno;
        int err = print_bytes(chunk, (size_t)n);
        if (err)
            return err;
    }
    fputs("EOF\n", stderr);
    return 0;
}

// The whole file, read before anything is printed (as fs::read does).
static int read_file(const char *path, struct buf *data) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;
    char chunk[16 * 1024];
    int err = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        buf_add(data, chunk, (size_t)n);
    }
    close(fd);
    return err;
}

static int cmd_read(char **argv) {
    struct buf data = {0};
    int err = read_file(argv[2], &data);
    if (!err)
        err = print_bytes(data.data, data.len);
    free(data.data);
    return err;
}

// isatty(N) of stdio stream N, as 1 or 0 (wasi-libc asks fd_fdstat_get).
static int cmd_isatty(char **argv) {
    int fd = atoi(argv[2]);
    if (fd < 0 || fd > 2)
        usage();
    char line[3] = {isatty(fd) ? '1' : '0', '\n', 0};
    return print_bytes(line, 2);
}

// At most N bytes of a file, in hex on one line: for devices that never end, like /dev/zero.
static int cmd_head(char **argv) {
    long long want = atoll(argv[3]);
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        return errno;
    struct buf hex = {0};
    unsigned char chunk[4096];
    int err = 0;
    while (want > 0) {
        ssize_t n = read(fd, chunk, want < (long long)sizeof chunk ? (size_t)want : sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            char two[3];
            snprintf(two, sizeof two, "%02x", chunk[i]);
            buf_add(&hex, two, 2);
        }
        want -= n;
    }
    close(fd);
    buf_add(&hex, "\n", 1);
    if (!err)
        err = print_bytes(hex.data, hex.len);
    free(hex.data);
    return err;
}

// Opens path for writing with the extra flags, creating it if missing, and writes text.
static int write_file(const char *path, int flags, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0666);
    if (fd < 0)
        return errno;
    int err = write_all(fd, text, strlen(text));
    close(fd);
    return err;
}

static int cmd_write(char **argv) { return write_file(argv[2], O_TRUNC, argv[3]); }

static int cmd_append(char **argv) { return write_file(argv[2], O_APPEND, argv[3]); }

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The names in dir but . and .., as lossy strings; 0 or the errno of a failed readdir.
static int read_names(DIR *dir, char ***names, size_t *n) {
    for (;;) {
        errno = 0;
        struct dirent *entry = readdir(dir);
        if (!entry)
            return errno;
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        *names = xrealloc(*names, (*n + 1) * sizeof **names);
        char *name = strdup(entry->d_name);
        if (!name)
            panic_with("memory allocation failed");
        char *shown = lossy(name);
        if (shown != name)
            free(name);
        (*names)[(*n)++] = shown;
    }
}

static int cmd_ls(char **argv) {
    DIR *dir = opendir(argv[2]);
    if (!dir)
        return errno;
    char **names = NULL;
    size_t n = 0;
    int err = read_names(dir, &names, &n);
    closedir(dir);
    // strcmp orders bytes as unsigned, which is how Rust sorts Strings.
    if (n > 1)
        qsort(names, n, sizeof *names, compare_names);
    if (!err)
        err = print_lines(names, n);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return err;
}

static int cmd_pwd(char **argv) {
    (void)argv;
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return errno;
    printf("%s\n", lossy(cwd));
    return 0;
}

// Not mkdir -p: tests want to see AlreadyExists and missing parents.
static int cmd_mkdir(char **argv) { return mkdir(argv[2], 0777) == 0 ? 0 : errno; }

static int cmd_link(char **argv) { return link(argv[2], argv[3]) == 0 ? 0 : errno; }

static int cmd_symlink(char **argv) { return symlink(argv[2], argv[3]) == 0 ? 0 : errno; }

// Through the descriptor (futimens), as Rust's File::set_modified does.
static int cmd_set_mtime(char **argv) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        return errno;
    struct timespec times[2] = {{0, UTIME_OMIT}, {(time_t)arg_u64(argv[3]), 0}};
    int failed = futimens(fd, times);
    int err = errno;
    close(fd);
    return failed ? err : 0;
}

// lstat so that a symlink to a directory is removed as a link, not followed.
static int cmd_rm(char **argv) {
    struct stat st;
    if (lstat(argv[2], &st) != 0)
        return errno;
    int failed = S_ISDIR(st.st_mode) ? rmdir(argv[2]) : unlink(argv[2]);
    return failed ? errno : 0;
}

// Prints `<file|dir|symlink|other> <size in bytes>` on one line; symlinks are not followed.
static int cmd_stat(char **argv) {
    struct stat st;
    if (lstat(argv[2], &st) != 0)
        return errno;
    const char *kind = S_ISLNK(st.st_mode)   ? "symlink"
                       : S_ISDIR(st.st_mode) ? "dir"
                       : S_ISREG(st.st_mode) ? "file"
                                             : "other";
    printf("%s %llu\n", kind, (unsigned long long)st.st_size);
    return 0;
}

// Writes `line 1`..`line N` with big buffered writes and exits straight away: tests check that
// output written just before proc_exit reaches the container's log.
static int cmd_stdout_lines(char **argv) {
    uint64_t n = arg_u64(argv[2]);
    // 64 KiB writes as the Rust guest's BufWriter makes; musl keeps 8 bytes of the buffer back.
    static char big[64 * 1024 + 8];
    setvbuf(stdout, big, _IOFBF, sizeof big);
    for (uint64_t i = 0; i < n; i++)
        if (printf("line %llu\n", (unsigned long long)(i + 1)) < 0)
            return output_error();
    if (fflush(stdout) != 0)
        return output_error();
    exit(0);
}

static int cmd_stderr(char **argv) {
    fprintf(stderr, "%s\n", argv[2]);
    return 0;
}

// Blocks inside the WASI poll_oneoff call (on the monotonic clock, as std's sleep does), not in
// guest code. The durations Duration::from_secs_f64 refuses make Rust panic.
static void sleep_secs(double secs) {
    if (secs != secs)
        panic_with("cannot convert float seconds to Duration: value is either too big or NaN");
    if (secs < 0)
        panic_with("cannot convert float seconds to Duration: value is negative");
    if (secs >= 18446744073709551616.0)
        panic_with("cannot convert float seconds to Duration: value is either too big or NaN");
    uint64_t whole = (uint64_t)secs;
    struct timespec left = {
        .tv_sec = whole > INT64_MAX ? INT64_MAX : (time_t)whole,
        .tv_nsec = (long)((secs - (double)whole) * 1e9),
    };
    // std makes no call at all for a zero duration; a poll_oneoff with a zero timeout blocks
    // forever under the shim's wasmer.
    if (left.tv_sec == 0 && left.tv_nsec == 0)
        return;
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &left, &left) == EINTR) {
    }
}

// "sleeping" comes before the argument is parsed, as in the Rust guest.
static int cmd_sleep(char **argv) {
    say("sleeping");
    sleep_secs(arg_f64(argv[2]));
    return 0;
}

// Computes forever without a single syscall, so only the shim's own means (an epoch or signal
// interrupt, or killing the process) can stop it.
static int cmd_spin(char **argv) {
    (void)argv;
    say("spinning");
    // volatile keeps the optimiser from proving the loop useless and removing it.
    volatile uint64_t x = 1;
    for (;;)
        x = x * 6364136223846793005ULL + 1;
}

// The numbers the sieve of `sieve N` covers in its first round: a 1 MiB table, which stays in the
// CPU's caches, so the figure measures generated code rather than memory.
#define SIEVE_LIMIT ((size_t)1 << 20)

// The number of primes below n; flags is the sieve's scratch table of n bytes.
static uint64_t count_primes(unsigned char *flags, size_t n) {
    memset(flags, 1, n);
    memset(flags, 0, n < 2 ? n : 2);
    for (size_t i = 2; i * i < n; i++)
        if (flags[i] == 1)
            for (size_t multiple = i * i; multiple < n; multiple += i)
                flags[multiple] = 0;
    uint64_t primes = 0;
    for (size_t i = 0; i < n; i++)
        primes += flags[i] == 1;
    return primes;
}

// CPU-bound work for the benchmark: N rounds of a sieve of Eratosthenes, timed by the guest
// itself on the monotonic clock (Rust's Instant). Prints the checksum of the prime counts, then
// the elapsed nanoseconds.
static int cmd_sieve(char **argv) {
    uint64_t rounds = arg_u64(argv[2]);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned char *flags = xrealloc(NULL, SIEVE_LIMIT);
    uint64_t checksum = 0;
    for (uint64_t round = 0; round < rounds; round++) {
        // A different limit each round, so no round's count can be reused for the next.
        // The volatile read keeps the optimiser from doing so all the same (Rust's black_box).
        size_t limit = SIEVE_LIMIT - (size_t)(round % 256);
        volatile size_t opaque = limit;
        checksum = checksum * 31 + count_primes(flags, opaque);
    }
    free(flags);
    clock_gettime(CLOCK_MONOTONIC, &end);
    uint64_t elapsed = (uint64_t)(end.tv_sec - start.tv_sec) * 1000000000u +
                       (uint64_t)end.tv_nsec - (uint64_t)start.tv_nsec;
    if (printf("%llu\n%llu\n", (unsigned long long)checksum, (unsigned long long)elapsed) < 0)
        return output_error();
    return 0;
}

static int cmd_read_stdin_line(char **argv) {
    (void)argv;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    // At EOF (or on a closed stdin, which std reads as empty) the line is empty, not an error.
    if (n < 0 && ferror(stdin) && errno != EBADF)
        return errno;
    size_t len = n < 0 ? 0 : (size_t)n;
    if (!utf8_valid(line, len))
        return ERR_INVALID_UTF8;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    printf("got: %.*s\n", (int)len, len ? line : "");
    free(line);
    return 0;
}

// Every block stays reachable from here (each one's first bytes point to the one before), so
// the compiler cannot drop allocations that are never read.
static void *volatile blocks;

// Allocates and touches 1 MiB blocks until memory runs out. malloc returns NULL when
// memory.grow fails, which makes the failure observable instead of an abort.
static int cmd_alloc_forever(char **argv) {
    (void)argv;
    const size_t mib = (size_t)1 << 20;
    for (size_t count = 0;; count++) {
        void *block = malloc(mib);
        if (!block) {
            printf("allocation failed at %zu MiB\n", count);
            fflush(stdout);
            exit(12);
        }
        // Touch every byte so the memory is really used, not just reserved.
        memset(block, 0xA5, mib);
        void *previous = blocks;
        memcpy(block, &previous, sizeof previous);
        blocks = block;
        if ((count + 1) % 64 == 0)
            printf("%zu MiB\n", count + 1);
    }
}

static int cmd_panic(char **argv) {
    (void)argv;
    panic_with("probe panic");
}

// ---------------------------------------------------------------------------------------------

struct command {
    const char *name;
    int args; // after the name; -1: any number
    int (*run)(char **argv);
};

static const struct command COMMANDS[] = {
    {"args", -1, cmd_args},
    {"env", 0, cmd_env},
    {"exit", 1, cmd_exit},
    {"cat", 0, cmd_cat},
    {"read", 1, cmd_read},
    {"head", 2, cmd_head},
    {"isatty", 1, cmd_isatty},
    {"write", 2, cmd_write},
    {"append", 2, cmd_append},
    {"ls", 1, cmd_ls},
    {"pwd", 0, cmd_pwd},
    {"mkdir", 1, cmd_mkdir},
    {"rm", 1, cmd_rm},
    {"link", 2, cmd_link},
    {"symlink", 2, cmd_symlink},
    {"set-mtime", 2, cmd_set_mtime},
    {"stat", 1, cmd_stat},
    {"stdout-lines", 1, cmd_stdout_lines},
    {"stderr", 1, cmd_stderr},
    {"sleep", 1, cmd_sleep},
    {"spin", 0, cmd_spin},
    {"sieve", 1, cmd_sieve},
    {"read-stdin-line", 0, cmd_read_stdin_line},
    {"alloc-forever", 0, cmd_alloc_forever},
    {"panic", 0, cmd_panic},
};

static const struct command *find_command(const char *name, int args) {
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++) {
        const struct command *c = &COMMANDS[i];
        if (strcmp(c->name, name) == 0 && (c->args < 0 || c->args == args))
            return c;
    }
    return NULL;
}

int main(int argc, char **argv) {
    // Rust's stdout is a LineWriter wherever it goes; musl's would hold whole buffers when it
    // is a pipe, and a test waiting for a line would never see it.
    setvbuf(stdout, NULL, _IOLBF, 0);
    // The Rust guest takes its arguments lossily, and so uses the lossy text even as a path.
    for (int i = 0; i < argc; i++)
        argv[i] = lossy(argv[i]);

    const struct command *c = find_command(argc > 1 ? argv[1] : "", argc - 2);
    if (!c)
        usage();
    int err = c->run(argv);
    if (err)
        fail(err);
    // Surface a failed final flush (e.g. a closed stdout) as an error instead of ignoring it.
    if (fflush(stdout) != 0) {
        err = output_error();
        if (err)
            fail(err);
    }
    return 0;
}
