/*
 * Parent process: the seed's parent, ported to Linux.
 *
 * Stores a string in the shared memory that libshmem_compat attached when this program was
 * loaded, starts the child program given as the first argument, and waits for it. Exits with 0
 * when the child succeeded.
 *
 *   ./parent ./child
 */
#define _POSIX_C_SOURCE 200809L

#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <wchar.h>

#include <shmem_compat.h>

extern char **environ;

/* Starts argv[0] (searched in PATH when it has no slash) with the environment of this process
 * (the seed's CreateChildProcess). Returns the child's pid, or -1. */
static pid_t create_child_process(char *const argv[])
{
    pid_t pid;
    int err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (err != 0) {
        fprintf(stderr, "posix_spawnp %s failed (%s)\n", argv[0], strerror(err));
        return -1;
    }
    return pid;
}

int main(int argc, char *argv[])
{
    if (argc == 1) {
        printf("Please specify an input file\n");
        return 0;
    }

    /* New: the attach at load time can fail (say /dev/shm is full); the seed could not tell. */
    int status = shmem_compat_status();
    if (status != SHMEM_OK) {
        fprintf(stderr, "libshmem could not attach its shared memory: %s\n",
                shmem_strerror(status));
        return 1;
    }

    /* Call the library function. */
    printf("\nProcess is writing to shared memory...\n\n");
    fflush(stdout); /* before the child writes to the same output */
    SetSharedMem(L"This is a test string");

    /* Start the child process that will read the memory. */
    pid_t child = create_child_process(&argv[1]);
    if (child == -1)
        return 1;

    /* Ensure this process is around until the child process terminates. */
    int wstatus;
    while (waitpid(child, &wstatus, 0) == -1) {
        perror("waitpid");
        return 1;
    }
    return WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 ? 0 : 1;
}
