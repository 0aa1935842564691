/*
 * The map API from C: every call's arguments (NULLs, bad keys, flags), set/get/delete/len/
 * version, BUFFER_TOO_SMALL setting *out_len, NOT_FOUND, 255-byte keys, foreach (all entries,
 * early stop, a visitor that changes the map), a full map that changes nothing, waits on one key
 * and on any key woken by another process, timeouts, a wait ended by shmem_map_close.
 *
 *   map NAME           the test; runs `map NAME child` as the other process
 *   map NAME child     opens NAME, sets "from-child", exits
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmem.h>

#include "check.h"

struct seen {
    int entries;
    size_t bytes;
    int stop_after;
    char first[300];
};

static int visit(const char *key, const void *data, size_t len, uint64_t version, void *ctx)
{
    struct seen *s = ctx;
    (void)data;
    CHECK(version > 0);
    if (s->entries == 0) {
        strncpy(s->first, key, sizeof s->first - 1);
    }
    s->entries++;
    s->bytes += len;
    return s->stop_after > 0 && s->entries >= s->stop_after;
}

static shmem_map *closing;
static int closed_rc;

static void *wait_forever(void *arg)
{
    (void)arg;
    closed_rc = shmem_map_wait(closing, "never-set", 0, -1, NULL);
    return NULL;
}

static void run_child(const char *prog, const char *name)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl(prog, prog, name, "child", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "child") == 0) {
        shmem_map *m = NULL;
        CHECK_RC(shmem_map_open(argv[1], 0, 0, &m), SHMEM_OK);
        CHECK_RC(shmem_map_set(m, "from-child", "hi", 2, NULL), SHMEM_OK);
        shmem_map_close(m);
        return 0;
    }
    if (argc != 2) {
        return 2;
    }
    const char *name = argv[1];
    shmem_map *const untouched = (shmem_map *)&closed_rc; /* a marker; never dereferenced */
    shmem_map *m = untouched;
    char buf[512];
    size_t len = 777;
    uint64_t version = 777;

    /* Opening: bad arguments leave *out alone. */
    CHECK_RC(shmem_map_open(NULL, 4096, SHMEM_CREATE, &m), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open(name, 4096, SHMEM_CREATE, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open("a/b", 4096, SHMEM_CREATE, &m), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open(name, 4096, 16, &m), SHMEM_ERR_INVALID_ARGUMENT); /* no such flag */
    CHECK_RC(shmem_map_open(name, 4096, SHMEM_READONLY | SHMEM_EXCLUSIVE, &m),
             SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open(name, 4096, SHMEM_PERSISTENT, &m), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_open(name, 4096, 0, &m), SHMEM_ERR_NOT_FOUND);
    CHECK_RC(shmem_map_open(name, 0, SHMEM_CREATE, &m), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(m == untouched);
    CHECK_RC(shmem_map_open(name, 4096, SHMEM_CREATE | SHMEM_EXCLUSIVE, &m), SHMEM_OK);
    shmem_map *again = untouched;
    CHECK_RC(shmem_map_open(name, 4096, SHMEM_CREATE | SHMEM_EXCLUSIVE, &again),
             SHMEM_ERR_EXISTS);
    CHECK(again == untouched);

    /* NULL handles and arguments. */
    CHECK_RC(shmem_map_set(NULL, "k", "v", 1, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_set(m, NULL, "v", 1, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_set(m, "", "v", 1, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_set(m, "k", NULL, 1, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_get(m, NULL, buf, sizeof buf, &len, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_get(m, "", buf, sizeof buf, &len, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_get(m, "k", buf, sizeof buf, NULL, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_get(m, "k", NULL, 4, &len, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_delete(m, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_delete(m, ""), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_len(m, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_len(NULL, &len), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_version(m, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_wait(m, "", 0, 0, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_foreach(m, NULL, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_map_foreach(NULL, visit, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(len == 777 && version == 777);

    /* Set, get, versions, delete. */
    CHECK_RC(shmem_map_get(m, "k", buf, sizeof buf, &len, &version), SHMEM_ERR_NOT_FOUND);
    CHECK(len == 777 && version == 777);
    CHECK_RC(shmem_map_set(m, "k", "hello", 5, &version), SHMEM_OK);
    CHECK(version == 1);
    CHECK_RC(shmem_map_set(m, "empty", NULL, 0, NULL), SHMEM_OK);
    CHECK_RC(shmem_map_get(m, "k", buf, sizeof buf, &len, &version), SHMEM_OK);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0 && version == 1);
    CHECK_RC(shmem_map_get(m, "empty", NULL, 0, &len, &version), SHMEM_OK);
    CHECK(len == 0 && version == 2);
    len = 0;
    version = 777;
    CHECK_RC(shmem_map_get(m, "k", buf, 2, &len, &version), SHMEM_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 5 && version == 777);
    CHECK_RC(shmem_map_get(m, "k", NULL, 0, &len, NULL), SHMEM_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 5);
    CHECK_RC(shmem_map_len(m, &len), SHMEM_OK);
    CHECK(len == 2);
    CHECK_RC(shmem_map_delete(m, "empty"), SHMEM_OK);
    CHECK_RC(shmem_map_delete(m, "empty"), SHMEM_ERR_NOT_FOUND);
    CHECK_RC(shmem_map_version(m, &version), SHMEM_OK);
    CHECK(version == 3);

    /* Keys of 255 bytes work; 256 are refused. */
    char key[257];
    memset(key, 'x', 256);
    key[256] = 0;
    CHECK_RC(shmem_map_set(m, key, "v", 1, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    key[255] = 0;
    CHECK_RC(shmem_map_set(m, key, "long", 4, NULL), SHMEM_OK);
    CHECK_RC(shmem_map_get(m, key, buf, sizeof buf, &len, NULL), SHMEM_OK);
    CHECK(len == 4 && memcmp(buf, "long", 4) == 0);

    /* foreach: every entry, in key order; an early stop; a visitor may use the map. */
    struct seen s = {0};
    CHECK_RC(shmem_map_foreach(m, visit, &s), SHMEM_OK);
    CHECK(s.entries == 2 && s.bytes == 9 && strcmp(s.first, "k") == 0);
    struct seen one = {.stop_after = 1};
    CHECK_RC(shmem_map_foreach(m, visit, &one), SHMEM_OK);
    CHECK(one.entries == 1);

    /* Waits: already changed, timed out, woken by another process (one key and any key). */
    CHECK_RC(shmem_map_wait(m, "k", 0, 0, &version), SHMEM_OK);
    CHECK(version == 1);
    CHECK_RC(shmem_map_wait(m, "k", 1, 10, &version), SHMEM_ERR_TIMEOUT);
    CHECK_RC(shmem_map_version(m, &version), SHMEM_OK);
    uint64_t before = version;
    run_child(argv[0], name);
    CHECK_RC(shmem_map_wait(m, "from-child", 0, 10000, &version), SHMEM_OK);
    CHECK(version == before + 1);
    CHECK_RC(shmem_map_wait(m, NULL, before, 10000, &version), SHMEM_OK);
    CHECK(version == before + 1);
    CHECK_RC(shmem_map_get(m, "from-child", buf, sizeof buf, &len, NULL), SHMEM_OK);
    CHECK(len == 2 && memcmp(buf, "hi", 2) == 0);

    /* A full map: NO_SPACE, and nothing changes. */
    char big[600];
    memset(big, 'b', sizeof big);
    int rc = SHMEM_OK;
    for (int i = 0; i < 100 && rc == SHMEM_OK; i++) {
        char k[16];
        snprintf(k, sizeof k, "fill-%d", i);
        rc = shmem_map_set(m, k, big, sizeof big, NULL);
    }
    CHECK_RC(rc, SHMEM_ERR_NO_SPACE);
    CHECK_RC(shmem_map_version(m, &before), SHMEM_OK);
    CHECK_RC(shmem_map_len(m, &len), SHMEM_OK);
    CHECK_RC(shmem_map_set(m, "one-more", big, sizeof big, NULL), SHMEM_ERR_NO_SPACE);
    CHECK_RC(shmem_map_version(m, &version), SHMEM_OK);
    size_t len_after = 0;
    CHECK_RC(shmem_map_len(m, &len_after), SHMEM_OK);
    CHECK(version == before && len_after == len);
    CHECK_RC(shmem_map_get(m, "one-more", buf, sizeof buf, &len, NULL), SHMEM_ERR_NOT_FOUND);
    CHECK_RC(shmem_map_set(m, "k", big, 5000, NULL), SHMEM_ERR_TOO_LARGE);

    /* Close ends a wait in another thread; then every call is CLOSED. */
    CHECK_RC(shmem_map_open(name, 0, 0, &closing), SHMEM_OK);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_forever, NULL) == 0);
    shmem_map_close(closing);
    pthread_join(t, NULL);
    CHECK_RC(closed_rc, SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_map_len(closing, &len), SHMEM_ERR_CLOSED);
    CHECK_RC(shmem_map_get(closing, "k", buf, sizeof buf, &len, NULL), SHMEM_ERR_CLOSED);
    shmem_map_close(closing); /* twice: ignored */
    shmem_map_close(NULL);

    /* The other handle still works, then goes: the transient map is freed. */
    CHECK_RC(shmem_map_get(m, "k", buf, sizeof buf, &len, NULL), SHMEM_OK);
    shmem_map_close(m);
    printf("ok\n");
    return 0;
}
