/* SHMEM_READONLY on a map: a read-only handle reads what a read-write one stores (get, len,
 * version, foreach), every write is SHMEM_ERR_PERMISSION and changes nothing, it never
 * creates, and it cannot wait on a map made with the owner-only mode (whose writers wake only
 * waiters that announce themselves), except for a change that is already there.
 * argv[1]: a segment name. */
#include <stdio.h>
#include <string.h>

#include <shmem.h>

#include "check.h"

static int count(const char *key, const void *data, size_t len, uint64_t version, void *ctx) {
    (void)data;
    (void)version;
    CHECK(strlen(key) == 2 && len == 5);
    ++*(int *)ctx;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    shmem_map *rw = NULL;
    shmem_map *ro = NULL;
    CHECK_RC(shmem_map_open(argv[1], 4096, SHMEM_READONLY, &ro), SHMEM_ERR_NOT_FOUND);
    CHECK_RC(shmem_map_open(argv[1], 4096, SHMEM_READONLY | SHMEM_CREATE, &ro),
             SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open(argv[1], 4096, SHMEM_READONLY | SHMEM_PERSISTENT, &ro),
             SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(ro == NULL);
    CHECK_RC(shmem_map_open(argv[1], 4096, SHMEM_CREATE, &rw), SHMEM_OK);
    CHECK_RC(shmem_map_set(rw, "k1", "hello", 5, NULL), SHMEM_OK);
    CHECK_RC(shmem_map_set(rw, "k2", "world", 5, NULL), SHMEM_OK);
    CHECK_RC(shmem_map_open(argv[1], 0, SHMEM_READONLY, &ro), SHMEM_OK);

    char buf[64];
    size_t len = 0;
    uint64_t version = 0;
    CHECK_RC(shmem_map_get(ro, "k1", buf, sizeof buf, &len, &version), SHMEM_OK);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0 && version == 1);
    CHECK_RC(shmem_map_get(ro, "nope", buf, sizeof buf, &len, &version), SHMEM_ERR_NOT_FOUND);
    size_t keys = 0;
    CHECK_RC(shmem_map_len(ro, &keys), SHMEM_OK);
    CHECK(keys == 2);
    int seen = 0;
    CHECK_RC(shmem_map_foreach(ro, count, &seen), SHMEM_OK);
    CHECK(seen == 2);

    /* Every write is refused and changes nothing. */
    CHECK_RC(shmem_map_set(ro, "k1", "forged", 6, NULL), SHMEM_ERR_PERMISSION);
    CHECK_RC(shmem_map_set(ro, "new", "x", 1, NULL), SHMEM_ERR_PERMISSION);
    CHECK_RC(shmem_map_delete(ro, "k2"), SHMEM_ERR_PERMISSION);
    CHECK_RC(shmem_map_version(ro, &version), SHMEM_OK);
    CHECK(version == 2);
    CHECK_RC(shmem_map_get(ro, "k1", buf, sizeof buf, &len, &version), SHMEM_OK);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0 && version == 1);
    CHECK_RC(shmem_map_len(ro, &keys), SHMEM_OK);
    CHECK(keys == 2);

    /* The map is 0600: its writers wake only announced waiters, which a read-only handle
     * cannot be, so a wait that would sleep is refused, for one key and for any. */
    CHECK_RC(shmem_map_wait(ro, "k1", 1, 1000, &version), SHMEM_ERR_PERMISSION);
    CHECK_RC(shmem_map_wait(ro, NULL, 2, 1000, &version), SHMEM_ERR_PERMISSION);
    /* A change already there needs no sleep. */
    version = 0;
    CHECK_RC(shmem_map_wait(ro, "k1", 0, 1000, &version), SHMEM_OK);
    CHECK(version == 1);
    CHECK_RC(shmem_map_wait(ro, NULL, 0, 1000, &version), SHMEM_OK);
    CHECK(version == 2);

    shmem_map_close(ro);
    shmem_map_close(rw);
    printf("ok\n");
    return 0;
}
