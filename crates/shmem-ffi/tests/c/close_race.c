/*
 * shmem_close racing shmem_get, shmem_set, shmem_wait and shmem_wake on other threads: each
 * call in progress completes or returns SHMEM_ERR_CLOSED, a wait that sleeps forever is ended
 * with SHMEM_ERR_CLOSED, every call afterwards returns SHMEM_ERR_CLOSED, and the segment is
 * freed once the close and the calls have returned. Run under valgrind or AddressSanitizer, a
 * use of freed memory fails the test; a lost wake-up hangs it until the test's deadline.
 *
 *   close_race NAME ROUNDS
 *
 * Odd rounds have neither setter nor waker, so their waiters are asleep (or about to be) when
 * the handle is closed and only the close can end their waits.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include <shmem.h>

#include "check.h"

enum { GETTERS = 2, WAITERS = 2, WAKERS = 1, SETTERS = 1 };

/* Threads of this round that have started their first call. */
static atomic_int started;

static void *getter(void *arg)
{
    shmem_value *v = arg;
    char buf[64];
    size_t len;
    uint64_t version;
    for (int first = 1;; first = 0) {
        if (first)
            atomic_fetch_add(&started, 1);
        int rc = shmem_get(v, buf, sizeof buf, &len, &version);
        if (rc == SHMEM_ERR_CLOSED)
            return NULL;
        CHECK(rc == SHMEM_OK && (len == 0 || (len == 5 && memcmp(buf, "value", 5) == 0)));
    }
}

static void *setter(void *arg)
{
    shmem_value *v = arg;
    for (int first = 1;; first = 0) {
        if (first)
            atomic_fetch_add(&started, 1);
        int rc = shmem_set(v, "value", 5);
        if (rc == SHMEM_ERR_CLOSED)
            return NULL;
        CHECK(rc == SHMEM_OK);
    }
}

static void *waiter(void *arg)
{
    shmem_value *v = arg;
    uint64_t since = 0;
    for (int first = 1;; first = 0) {
        if (first)
            atomic_fetch_add(&started, 1);
        int rc = shmem_wait(v, since, -1, &since);
        if (rc == SHMEM_ERR_CLOSED)
            return NULL;
        /* A change (a setter's round), or a waker's shmem_wake. */
        CHECK(rc == SHMEM_OK || rc == SHMEM_ERR_CANCELLED);
    }
}

static void *waker(void *arg)
{
    shmem_value *v = arg;
    for (int first = 1;; first = 0) {
        if (first)
            atomic_fetch_add(&started, 1);
        int rc = shmem_wake(v);
        if (rc == SHMEM_ERR_CLOSED)
            return NULL;
        CHECK(rc == SHMEM_OK);
        sched_yield(); /* give the waiters a chance to fall asleep */
    }
}

/* Every call on a closed handle returns SHMEM_ERR_CLOSED and touches nothing. */
static void check_closed(shmem_value *v)
{
    char buf[8] = "#";
    size_t len = 777, capacity = 777;
    uint64_t version = 777;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, &version), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_set(v, "x", 1), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_wait(v, 0, -1, &version), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_wait(v, 12345, 0, &version), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_wake(v), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_created(v), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_capacity(v, &capacity), SHMEM_ERR_CLOSED);
    CHECK(buf[0] == '#' && len == 777 && version == 777 && capacity == 777);
    shmem_close(v); /* again: ignored */
}

int main(int argc, char *argv[])
{
    CHECK(argc == 3);
    const char *name = argv[1];
    int rounds = atoi(argv[2]);
    CHECK(rounds > 0);
    shmem_value *previous = NULL;
    for (int round = 0; round < rounds; round++) {
        shmem_value *v;
        CHECK_RC(shmem_open(name, 64, SHMEM_CREATE | SHMEM_EXCLUSIVE, &v), SHMEM_OK);
        CHECK(v != previous); /* a closed handle never names a new one */
        int setters = round % 2 == 0 ? SETTERS : 0;
        int wakers = round % 2 == 0 ? WAKERS : 0;
        int n = GETTERS + WAITERS + wakers + setters;
        pthread_t t[GETTERS + WAITERS + WAKERS + SETTERS];
        atomic_store(&started, 0);
        int k = 0;
        for (int i = 0; i < GETTERS; i++)
            CHECK(pthread_create(&t[k++], NULL, getter, v) == 0);
        for (int i = 0; i < WAITERS; i++)
            CHECK(pthread_create(&t[k++], NULL, waiter, v) == 0);
        for (int i = 0; i < wakers; i++)
            CHECK(pthread_create(&t[k++], NULL, waker, v) == 0);
        for (int i = 0; i < setters; i++)
            CHECK(pthread_create(&t[k++], NULL, setter, v) == 0);
        while (atomic_load(&started) < n)
            sched_yield();
        shmem_close(v);
        for (int i = 0; i < n; i++)
            CHECK(pthread_join(t[i], NULL) == 0);
        check_closed(v);
        if (previous != NULL)
            check_closed(previous);
        /* Every call has returned: the last user let go and the segment is gone. */
        shmem_value *again;
        CHECK_RC(shmem_open(name, 0, 0, &again), SHMEM_ERR_NOT_FOUND);
        previous = v;
    }
    printf("ok %d rounds\n", rounds);
    return 0;
}
