/* shmem_wake ends a shmem_wait that waits forever, with SHMEM_ERR_CANCELLED, and the handle
 * can then be closed. argv[1]: a segment name. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>

#include <shmem.h>

static shmem_value *v;
static atomic_int result = 1;
static atomic_int done;

static void *waiter(void *arg) {
    (void)arg;
    uint64_t seen = 0;
    atomic_store(&result, shmem_wait(v, 0, -1, &seen));
    atomic_store(&done, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    if (shmem_open(argv[1], 64, SHMEM_CREATE, &v) != SHMEM_OK) return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, NULL) != 0) return 2;
    /* A wake before the wait starts does not cancel it: keep waking until it has ended. */
    while (!atomic_load(&done)) {
        if (shmem_wake(v) != SHMEM_OK) return 1;
        sched_yield();
    }
    pthread_join(t, NULL);
    if (shmem_wake(NULL) != SHMEM_ERR_INVALID_ARGUMENT) return 1;
    int r = atomic_load(&result);
    printf("%d %s\n", r, shmem_strerror(r));
    shmem_close(v);
    return 0;
}
