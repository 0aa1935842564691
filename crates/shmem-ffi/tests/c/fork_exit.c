/* Children forked while another thread is inside SetSharedMem/GetSharedMem must still be able
 * to exit (the library detaches in its destructor at exit). The parent waits for each child
 * with a blocking waitpid: a child that hangs makes the whole program hit the test's deadline. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wchar.h>

#include <shmem_compat.h>

static atomic_int stop;

static void *busy(void *arg) {
    (void)arg;
    wchar_t buf[64];
    while (!atomic_load(&stop)) {
        SetSharedMem(L"hello");
        GetSharedMem(buf, 64);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, busy, NULL) != 0) return 2;
    for (int i = 0; i < 40; i++) {
        pid_t p = fork();
        if (p < 0) return 2;
        if (p == 0) exit(0);
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("ok\n");
    return 0;
}
