/*
 * The map API: many keys in one segment, shared between two processes, with a wait on one key.
 *
 * The parent creates the map and stores two settings; a child process opens it by name,
 * waits for the key "job/status" to be set, then prints every entry of one consistent
 * version, in key order. The parent sets "job/status", waits for the child, deletes a key and
 * prints how many are left. Every call's result is checked.
 *
 *   ./map_demo [NAME]        (segment file: $SHMEM_DIR/shmem.NAME, default /dev/shm)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmem.h>

/* Prints what failed and exits, if `rc` is an error. */
static void check(int rc, const char *what)
{
    if (rc != SHMEM_OK) {
        fprintf(stderr, "%s: %s (%d)\n", what, shmem_strerror(rc), rc);
        exit(1);
    }
}

/* Sets `key` to the string `text` (without its NUL). */
static uint64_t set_string(shmem_map *m, const char *key, const char *text)
{
    uint64_t version;
    check(shmem_map_set(m, key, text, strlen(text), &version), "shmem_map_set");
    return version;
}

/* `shmem_map_foreach`'s visitor: prints one entry (the values here are short strings). */
static int print_entry(const char *key, const void *data, size_t len, uint64_t version, void *ctx)
{
    (void)ctx;
    printf("child:   %s = %.*s (version %llu)\n", key, (int)len, (const char *)data,
           (unsigned long long)version);
    return 0; /* nonzero would stop the iteration */
}

static int child(const char *name)
{
    shmem_map *m = NULL;
    check(shmem_map_open(name, 0, 0, &m), "child: shmem_map_open"); /* an existing map only */
    /* "job/status" is absent (version 0) until the parent sets it. */
    uint64_t version;
    check(shmem_map_wait(m, "job/status", 0, 10000, &version), "child: shmem_map_wait");
    char status[64];
    size_t len;
    check(shmem_map_get(m, "job/status", status, sizeof status, &len, NULL),
          "child: shmem_map_get");
    printf("child: job/status set at version %llu: %.*s\n", (unsigned long long)version,
           (int)len, status);
    check(shmem_map_foreach(m, print_entry, NULL), "child: shmem_map_foreach");
    shmem_map_close(m);
    fflush(stdout); /* the caller leaves with _exit, which does not flush */
    return 0;
}

int main(int argc, char *argv[])
{
    const char *name = argc > 1 ? argv[1] : "map-demo";
    shmem_map *m = NULL;

    check(shmem_map_open(name, 4096, SHMEM_CREATE, &m), "shmem_map_open");
    set_string(m, "config/threads", "4");
    uint64_t v = set_string(m, "config/mode", "fast");
    printf("parent: two settings stored, map version %llu\n", (unsigned long long)v);

    fflush(stdout);
    pid_t pid = fork();
    if (pid == -1) {
        perror("fork");
        return 1;
    }
    if (pid == 0)
        _exit(child(name));

    set_string(m, "job/status", "done");

    int wstatus;
    if (waitpid(pid, &wstatus, 0) == -1) {
        perror("waitpid");
        return 1;
    }
    check(shmem_map_delete(m, "config/mode"), "shmem_map_delete");
    size_t keys;
    check(shmem_map_len(m, &keys), "shmem_map_len");
    printf("parent: config/mode deleted, %zu keys left\n", keys);
    shmem_map_close(m); /* the last user: the segment is freed */
    return WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 ? 0 : 1;
}
