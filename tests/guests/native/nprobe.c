/* nprobe: a static native program to exec into native containers (a pod's sidecar), as
 * `kubectl exec` would run a shell's commands there.
 *   nprobe echo WORD...   prints the words, space-separated, and a newline
 *   nprobe exit N         exits with N
 *   nprobe self           prints what confines it: "mnt <ns>", "cgroup <memory cgroup>",
 *                         "CapEff <hex>", "NoNewPrivs <n>", "Uid <uid>", one per line */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void status_field(const char *name) {
    char line[512];
    size_t n = strlen(name);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            char *value = line + n + 1;
            value += strspn(value, " \t");
            value[strcspn(value, " \t\n")] = '\0';
            printf("%s %s\n", name, value);
        }
    }
    fclose(f);
}

static void memory_cgroup(void) {
    char line[1024];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *controllers = strchr(line, ':');
        char *path = controllers ? strchr(controllers + 1, ':') : NULL;
        if (!path)
            continue;
        *path++ = '\0';
        /* cgroup v1: the memory controller's line; v2: the one unified line ("0::"). */
        if (strcmp(controllers + 1, "memory") == 0 || strcmp(line, "0") == 0) {
            path[strcspn(path, "\n")] = '\0';
            printf("cgroup %s\n", path);
            break;
        }
    }
    fclose(f);
}

static int self(void) {
    char ns[256];
    ssize_t n = readlink("/proc/self/ns/mnt", ns, sizeof ns - 1);
    if (n < 0)
        return 1;
    ns[n] = '\0';
    printf("mnt %s\n", ns);
    memory_cgroup();
    status_field("CapEff");
    status_field("NoNewPrivs");
    status_field("Uid");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "echo") == 0) {
        for (int i = 2; i < argc; i++)
            printf(i > 2 ? " %s" : "%s", argv[i]);
        printf("\n");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "exit") == 0)
        return atoi(argv[2]);
    if (argc == 2 && strcmp(argv[1], "self") == 0)
        return self();
    fprintf(stderr, "usage: nprobe echo WORD... | exit N | self\n");
    return 2;
}
