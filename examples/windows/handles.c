/*
 * The handle API of shmem.dll, checked under Wine by .ci/windows.sh: open (created flag,
 * exclusive), set/get, wait (timeout and change), a persistent segment (a file in $SHMEM_DIR,
 * else %LOCALAPPDATA%\shmem) kept without users until shmem_unlink, the Windows-only refusal
 * (shmem_unlink of a transient segment), close; and the map API on a second name: set/get, a
 * wait on one key (timeout, then change), NOT_FOUND, a full map that refuses a set (NO_SPACE),
 * delete, len. One process; every result is checked and the first wrong one exits 1 naming
 * the call.
 *
 *   handles.exe NAME
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmem.h"

static void expect(int got, int want, const char *what)
{
    if (got != want) {
        fprintf(stderr, "%s: got %d (%s), want %d\n", what, got, shmem_strerror(got), want);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: handles NAME\n");
        return 2;
    }
    const char *name = argv[1];
    shmem_value *a = NULL, *b = NULL;
    expect(shmem_open(name, 64, SHMEM_CREATE, &a), SHMEM_OK, "open (create)");
    expect(shmem_created(a), 1, "created by the first open");
    expect(shmem_open(name, 64, SHMEM_CREATE, &b), SHMEM_OK, "open (second)");
    expect(shmem_created(b), 0, "not created by the second open");
    shmem_value *c = NULL;
    expect(shmem_open(name, 64, SHMEM_CREATE | SHMEM_EXCLUSIVE, &c), SHMEM_ERR_EXISTS,
           "open exclusive of a live name");
    expect(shmem_unlink(name), SHMEM_ERR_INVALID_ARGUMENT, "unlink of a transient segment");

    char kept[256];
    snprintf(kept, sizeof kept, "%s-persistent", name);
    expect(shmem_open(kept, 64, SHMEM_CREATE | SHMEM_PERSISTENT, &c), SHMEM_OK,
           "open persistent");
    expect(shmem_created(c), 1, "a new persistent segment");
    expect(shmem_set(c, "kept", 4), SHMEM_OK, "set persistent");
    shmem_close(c);
    expect(shmem_open(kept, 0, 0, &c), SHMEM_OK, "open persistent after its last close");
    expect(shmem_created(c), 0, "an existing persistent segment");
    char k[8];
    size_t klen = 0;
    expect(shmem_get(c, k, sizeof k, &klen, NULL), SHMEM_OK, "get persistent");
    expect((int)klen == 4 && memcmp(k, "kept", 4) == 0, 1, "the value kept");
    shmem_close(c);
    expect(shmem_unlink(kept), SHMEM_OK, "unlink persistent");
    expect(shmem_open(kept, 0, 0, &c), SHMEM_ERR_NOT_FOUND, "open after unlink");
    expect(shmem_unlink(kept), SHMEM_ERR_NOT_FOUND, "unlink twice");

    uint64_t v = 0;
    expect(shmem_wait(b, 0, 10, &v), SHMEM_ERR_TIMEOUT, "wait with nothing set");
    expect(shmem_set(a, "hello", 5), SHMEM_OK, "set");
    uint64_t seen = 0;
    expect(shmem_wait(b, 0, 10000, &seen), SHMEM_OK, "wait after a set");
    expect((int)seen, 1, "the version waited for");
    char buf[16];
    size_t len = 0;
    expect(shmem_get(b, buf, 2, &len, &v), SHMEM_ERR_BUFFER_TOO_SMALL, "get into 2 bytes");
    expect(shmem_get(b, buf, sizeof buf, &len, &v), SHMEM_OK, "get");
    expect((int)len, 5, "the length read");
    expect(memcmp(buf, "hello", 5), 0, "the bytes read");
    char big[65] = {0};
    expect(shmem_set(a, big, sizeof big), SHMEM_ERR_TOO_LARGE, "set past the capacity");
    shmem_close(a);
    shmem_close(b);
    expect(shmem_open(name, 0, 0, &c), SHMEM_ERR_NOT_FOUND, "open existing after the last close");

    char map_name[128];
    snprintf(map_name, sizeof map_name, "%s-map", name);
    shmem_map *m = NULL;
    expect(shmem_map_open(map_name, 4096, SHMEM_CREATE, &m), SHMEM_OK, "map open (create)");
    expect(shmem_map_wait(m, "k", 0, 10, &v), SHMEM_ERR_TIMEOUT, "map wait with nothing set");
    uint64_t mv = 0;
    expect(shmem_map_set(m, "k", "value", 5, &mv), SHMEM_OK, "map set");
    expect(shmem_map_wait(m, "k", 0, 10000, &seen), SHMEM_OK, "map wait after a set");
    expect((int)seen, (int)mv, "the key's version waited for");
    expect(shmem_map_get(m, "k", buf, sizeof buf, &len, &v), SHMEM_OK, "map get");
    expect((int)len == 5 && memcmp(buf, "value", 5) == 0, 1, "the map bytes read");
    expect(shmem_map_get(m, "absent", buf, sizeof buf, &len, &v), SHMEM_ERR_NOT_FOUND,
           "map get of a missing key");
    static char fill[1000];
    int filled = 0;
    for (;;) {
        char key[16];
        snprintf(key, sizeof key, "f%d", filled);
        int r = shmem_map_set(m, key, fill, sizeof fill, NULL);
        if (r == SHMEM_ERR_NO_SPACE)
            break;
        expect(r, SHMEM_OK, "map set until full");
        filled++;
    }
    size_t keys = 0;
    expect(shmem_map_version(m, &v), SHMEM_OK, "map version when full");
    expect(shmem_map_len(m, &keys), SHMEM_OK, "map len");
    expect((int)keys, filled + 1, "a refused set adds no key");
    expect(shmem_map_version(m, &seen), SHMEM_OK, "map version");
    expect(seen == v, 1, "a refused set uses no version");
    expect(shmem_map_delete(m, "k"), SHMEM_OK, "map delete");
    expect(shmem_map_delete(m, "k"), SHMEM_ERR_NOT_FOUND, "map delete of a missing key");
    shmem_map_close(m);
    printf("handles: all checks passed\n");
    return 0;
}
