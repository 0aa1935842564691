/*
 * Opens a value with the handle API, stores in it, and leaves without shmem_close: by
 * returning from main (argv[2] == "return") or calling exit() (argv[2] == "exit"). The
 * library's exit handler must detach it, so nothing is left. Prints its pid first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <shmem.h>

#include "check.h"

static void leave(void)
{
    exit(0);
}

int main(int argc, char **argv)
{
    CHECK(argc == 3);
    shmem_value *v = NULL;
    CHECK_RC(shmem_open(argv[1], 64, SHMEM_CREATE, &v), SHMEM_OK);
    CHECK_RC(shmem_set(v, "never closed", 12), SHMEM_OK);
    printf("pid=%d\n", (int)getpid());
    fflush(stdout);
    if (strcmp(argv[2], "exit") == 0) leave();
    return 0;
}
