/* SHMEM_READONLY: a read-only handle reads what a read-write one stores, every write is
 * SHMEM_ERR_PERMISSION, it never creates, and it cannot wait on a segment made with the
 * owner-only mode (whose writers wake only waiters that announce themselves).
 * argv[1]: a segment name. */
#include <stdio.h>
#include <string.h>

#include <shmem.h>

#include "check.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    shmem_value *rw = NULL;
    shmem_value *ro = NULL;
    CHECK(shmem_open(argv[1], 64, SHMEM_READONLY, &ro) == SHMEM_ERR_NOT_FOUND);
    CHECK(shmem_open(argv[1], 64, SHMEM_READONLY | SHMEM_CREATE, &ro) ==
          SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(shmem_open(argv[1], 64, SHMEM_CREATE, &rw) == SHMEM_OK);
    CHECK(shmem_set(rw, "hello", 5) == SHMEM_OK);
    CHECK(shmem_open(argv[1], 0, SHMEM_READONLY, &ro) == SHMEM_OK);
    CHECK(shmem_created(ro) == 0);
    char buf[64];
    size_t len = 0;
    uint64_t version = 0;
    CHECK(shmem_get(ro, buf, sizeof buf, &len, &version) == SHMEM_OK);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0 && version == 1);
    CHECK(shmem_set(ro, "forged", 6) == SHMEM_ERR_PERMISSION);
    /* The writer's segment is 0600: nobody reads it without writing, so its writers wake only
     * announced waiters, which a read-only handle cannot be. */
    uint64_t seen = 0;
    CHECK(shmem_wait(ro, 1, 1000, &seen) == SHMEM_ERR_PERMISSION);
    CHECK(shmem_get(ro, buf, sizeof buf, &len, &version) == SHMEM_OK && version == 1);
    shmem_close(ro);
    shmem_close(rw);
    printf("ok\n");
    return 0;
}
