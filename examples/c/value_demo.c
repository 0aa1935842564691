/*
 * The handle API: a value shared between two processes, with a change notification.
 *
 * The parent creates the value and stores a first string; a child process opens it by name,
 * waits for the next version and prints it; the parent stores the second string and waits for
 * the child. Every call's result is checked.
 *
 *   ./value_demo [NAME]        (segment file: $SHMEM_DIR/shmem.NAME, default /dev/shm)
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

/* Reads the whole value into a new NUL-terminated string, growing the buffer when the value
 * is longer than it (shmem_get reports the length it needs). */
static char *get_string(shmem_value *v, uint64_t *version)
{
    size_t cap = 8, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (buf == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        int rc = shmem_get(v, buf, cap, &len, version);
        if (rc == SHMEM_OK)
            break;
        if (rc != SHMEM_ERR_BUFFER_TOO_SMALL)
            check(rc, "shmem_get");
        cap = len;
        char *bigger = realloc(buf, cap + 1);
        if (bigger == NULL)
            free(buf);
        buf = bigger;
    }
    buf[len] = '\0';
    return buf;
}

static int child(const char *name, uint64_t since)
{
    shmem_value *v = NULL;
    check(shmem_open(name, 0, 0, &v), "child: shmem_open"); /* an existing value only */
    uint64_t version;
    check(shmem_wait(v, since, 10000, &version), "child: shmem_wait");
    char *text = get_string(v, &version);
    printf("child: version %llu: %s\n", (unsigned long long)version, text);
    free(text);
    shmem_close(v);
    fflush(stdout); /* the caller leaves with _exit, which does not flush */
    return 0;
}

int main(int argc, char *argv[])
{
    const char *name = argc > 1 ? argv[1] : "value-demo";
    shmem_value *v = NULL;

    check(shmem_open(name, 256, SHMEM_CREATE, &v), "shmem_open");
    printf("parent: opened '%s' (%s)\n", name,
           shmem_created(v) == 1 ? "created it" : "it existed");

    const char *first = "first value";
    check(shmem_set(v, first, strlen(first)), "shmem_set");
    uint64_t version;
    char *text = get_string(v, &version);
    printf("parent: version %llu: %s\n", (unsigned long long)version, text);
    free(text);

    fflush(stdout);
    pid_t pid = fork();
    if (pid == -1) {
        perror("fork");
        return 1;
    }
    if (pid == 0)
        _exit(child(name, version));

    const char *second = "second value, seen by the child";
    check(shmem_set(v, second, strlen(second)), "shmem_set");

    int wstatus;
    if (waitpid(pid, &wstatus, 0) == -1) {
        perror("waitpid");
        return 1;
    }
    shmem_close(v); /* the last user: the segment is freed */
    return WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 ? 0 : 1;
}
