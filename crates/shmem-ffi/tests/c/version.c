/*
 * A handle-API program for the install test: prints shmem_version() and uses a value.
 *
 *   version NAME
 */
#include <string.h>

#include <shmem.h>

#include "check.h"

int main(int argc, char *argv[])
{
    CHECK(argc == 2);
    printf("%s\n", shmem_version());
    shmem_value *v;
    CHECK_RC(shmem_open(argv[1], 64, SHMEM_CREATE, &v), SHMEM_OK);
    CHECK_RC(shmem_set(v, "installed", 9), SHMEM_OK);
    char buf[16];
    size_t len;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, NULL), SHMEM_OK);
    CHECK(len == 9 && memcmp(buf, "installed", 9) == 0);
    shmem_close(v);
    return 0;
}
