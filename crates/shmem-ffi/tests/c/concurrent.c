/*
 * Two processes, each with two threads sharing one handle, write and read one value segment
 * at once. Every value is self-checking, so a torn read is caught; a waiter in each process
 * sleeps in shmem_wait until the others have published.
 *
 *   concurrent NAME ITERATIONS
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmem.h>

#include "check.h"

#define CAPACITY 256

static long iterations;

/* Value number k: its 8-byte number, then bytes derived from it, 16 to 215 bytes long. */
static size_t make_value(uint8_t *buf, uint64_t k)
{
    size_t len = 16 + k % 200;
    memcpy(buf, &k, sizeof k);
    for (size_t i = sizeof k; i < len; i++)
        buf[i] = (uint8_t)(k * 31 + i);
    return len;
}

/* Whether buf holds a complete value (or the empty value, before the first set). */
static int valid(const uint8_t *buf, size_t len)
{
    if (len == 0)
        return 1;
    if (len < 16)
        return 0;
    uint64_t k;
    memcpy(&k, buf, sizeof k);
    uint8_t want[CAPACITY];
    return make_value(want, k) == len && memcmp(buf, want, len) == 0;
}

struct worker {
    shmem_value *v;
    uint64_t id;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    uint8_t buf[CAPACITY];
    uint64_t last = 0;
    for (long i = 0; i < iterations; i++) {
        size_t len = make_value(buf, w->id << 32 | (uint64_t)i);
        CHECK_RC(shmem_set(w->v, buf, len), SHMEM_OK);
        uint64_t version;
        CHECK_RC(shmem_get(w->v, buf, sizeof buf, &len, &version), SHMEM_OK);
        CHECK(valid(buf, len));
        CHECK(version > last); /* versions only grow, and our own set is at least this new */
        last = version;
    }
    return NULL;
}

static void *wait_for_change(void *arg)
{
    struct worker *w = arg;
    uint64_t version;
    CHECK_RC(shmem_wait(w->v, w->id, -1, &version), SHMEM_OK);
    CHECK(version != w->id);
    return NULL;
}

/* Runs two workers and a waiter on one handle. */
static void run(shmem_value *v, uint64_t first_id)
{
    uint8_t buf[CAPACITY];
    size_t len;
    uint64_t now;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, &now), SHMEM_OK);
    struct worker waiter = {v, now}; /* wakes at the first change after this */
    struct worker workers[2] = {{v, first_id}, {v, first_id + 1}};
    pthread_t t[3];
    CHECK(pthread_create(&t[0], NULL, wait_for_change, &waiter) == 0);
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i + 1], NULL, work, &workers[i]) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
}

int main(int argc, char *argv[])
{
    CHECK(argc == 3);
    const char *name = argv[1];
    iterations = atol(argv[2]);
    CHECK(iterations > 0);

    shmem_value *v;
    CHECK_RC(shmem_open(name, CAPACITY, SHMEM_CREATE, &v), SHMEM_OK);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid != -1);
    if (pid == 0) {
        /* The child's own handle, opened by name. */
        shmem_value *mine;
        CHECK_RC(shmem_open(name, 0, 0, &mine), SHMEM_OK);
        CHECK_RC(shmem_created(mine), 0);
        run(mine, 3);
        shmem_close(mine);
        _exit(0);
    }
    run(v, 1);
    int wstatus;
    CHECK(waitpid(pid, &wstatus, 0) == pid);
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

    uint8_t buf[CAPACITY];
    size_t len;
    uint64_t version;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, &version), SHMEM_OK);
    CHECK(valid(buf, len));
    CHECK(version == (uint64_t)(4 * iterations));
    shmem_close(v);
    printf("ok %llu versions\n", (unsigned long long)version);
    return 0;
}
