/*
 * The handle API's contract: NULL arguments everywhere, out-parameters left alone on failure,
 * flags, error codes, and a closed handle's neighbours still working.
 *
 *   handles NAME      (segments NAME-a and NAME-b in $SHMEM_DIR)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <string.h>
#include <wchar.h>

#include <shmem_compat.h>

#include "check.h"

static char a[256], b[256];

static void set_str(shmem_value *v, const char *s)
{
    CHECK_RC(shmem_set(v, s, strlen(s)), SHMEM_OK);
}

/* CHECKs that `v` holds the string `want`. */
static void check_value(shmem_value *v, const char *want)
{
    char buf[256];
    size_t len = 0;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, NULL), SHMEM_OK);
    CHECK(len == strlen(want) && memcmp(buf, want, len) == 0);
}

static void null_arguments(void)
{
    shmem_value *const untouched = (shmem_value *)&a; /* a marker; never dereferenced */
    shmem_value *v = untouched;
    size_t len = 777;
    uint64_t version = 777;
    char buf[8];

    /* The compatibility functions. */
    SetSharedMem(NULL);
    GetSharedMem(NULL, 0);
    GetSharedMem(NULL, 10);
    wchar_t w[2] = {L'x', L'y'};
    GetSharedMem(w, 0);
    CHECK(w[0] == L'x');
    GetSharedMem(w, 1);
    CHECK(w[0] == 0 && w[1] == L'y');

    /* shmem_open: every pointer, bad names and flags; *out untouched. */
    CHECK_RC(shmem_open(NULL, 64, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, SHMEM_CREATE, NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open("", 64, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open("a/b", 64, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open("..", 64, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open("\xff", 64, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, 16, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, SHMEM_READONLY | SHMEM_EXCLUSIVE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, SHMEM_EXCLUSIVE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, SHMEM_PERSISTENT, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 0, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, SIZE_MAX, SHMEM_CREATE, &v), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_open(a, 64, 0, &v), SHMEM_ERR_NOT_FOUND);
    CHECK(v == untouched);

    /* Every function given a NULL handle. */
    CHECK_RC(shmem_created(NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_set(NULL, "x", 1), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_get(NULL, buf, sizeof buf, &len, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_wait(NULL, 0, 0, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(len == 777 && version == 777);
    shmem_close(NULL);
    CHECK_RC(shmem_unlink(NULL), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_unlink("a/b"), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_unlink(a), SHMEM_ERR_NOT_FOUND);

    /* A live handle with NULL buffers and out-parameters. */
    CHECK_RC(shmem_open(a, 64, SHMEM_CREATE | SHMEM_EXCLUSIVE, &v), SHMEM_OK);
    CHECK(v != untouched && v != NULL);
    CHECK_RC(shmem_created(v), 1);
    CHECK_RC(shmem_set(v, NULL, 3), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_set(v, NULL, 0), SHMEM_OK); /* the empty value, version 1 */
    CHECK_RC(shmem_get(v, buf, sizeof buf, NULL, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK_RC(shmem_get(v, NULL, 4, &len, &version), SHMEM_ERR_INVALID_ARGUMENT);
    CHECK(len == 777 && version == 777);
    CHECK_RC(shmem_get(v, NULL, 0, &len, NULL), SHMEM_OK);
    CHECK(len == 0);
    CHECK_RC(shmem_get(v, NULL, 0, &len, &version), SHMEM_OK);
    CHECK(len == 0 && version == 1);
    set_str(v, "hello");
    /* Too small: nothing copied, *out_len is the length needed, *out_version untouched. */
    memset(buf, '#', sizeof buf);
    version = 777;
    CHECK_RC(shmem_get(v, buf, 4, &len, &version), SHMEM_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 5 && version == 777 && buf[0] == '#');
    CHECK_RC(shmem_get(v, NULL, 0, &len, NULL), SHMEM_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 5);
    CHECK_RC(shmem_wait(v, 2, 0, NULL), SHMEM_ERR_TIMEOUT);
    CHECK_RC(shmem_wait(v, 1, -1, NULL), SHMEM_OK); /* already changed: returns at once */
    CHECK_RC(shmem_wait(v, 0, 5, &version), SHMEM_OK);
    CHECK(version == 2);
    shmem_close(v);
    CHECK_RC(shmem_open(a, 64, 0, &v), SHMEM_ERR_NOT_FOUND); /* the last close freed it */
}

static void flags_and_codes(void)
{
    shmem_value *v1 = NULL, *v2 = NULL, *v3 = NULL;
    char big[200];
    memset(big, 'z', sizeof big);

    CHECK_RC(shmem_open(a, 100, SHMEM_CREATE, &v1), SHMEM_OK); /* rounded up to 128 */
    CHECK_RC(shmem_created(v1), 1);
    CHECK_RC(shmem_open(a, 100, SHMEM_CREATE | SHMEM_EXCLUSIVE, &v2), SHMEM_ERR_EXISTS);
    CHECK_RC(shmem_open(a, 4096, SHMEM_CREATE, &v2), SHMEM_ERR_INVALID_ARGUMENT); /* too small */
    CHECK_RC(shmem_open(a, 0, 0, &v2), SHMEM_OK);
    CHECK_RC(shmem_created(v2), 0);
    CHECK_RC(shmem_set(v2, big, 129), SHMEM_ERR_TOO_LARGE);
    CHECK_RC(shmem_set(v2, big, 128), SHMEM_OK);
    shmem_close(v2);
    shmem_close(v1);

    /* Persistent: stays without users, until shmem_unlink. */
    CHECK_RC(shmem_open(b, 64, SHMEM_CREATE | SHMEM_PERSISTENT, &v3), SHMEM_OK);
    set_str(v3, "kept");
    shmem_close(v3);
    CHECK_RC(shmem_open(b, 64, 0, &v3), SHMEM_OK);
    CHECK_RC(shmem_created(v3), 0);
    check_value(v3, "kept");
    shmem_close(v3);
    CHECK_RC(shmem_unlink(b), SHMEM_OK);
    CHECK_RC(shmem_open(b, 64, 0, &v3), SHMEM_ERR_NOT_FOUND);
    CHECK_RC(shmem_unlink(b), SHMEM_ERR_NOT_FOUND);

    /* Every code has a message; unknown codes too. */
    for (int code = 1; code >= -13; code--)
        CHECK(shmem_strerror(code) != NULL && shmem_strerror(code)[0] != '\0');
    CHECK(strcmp(shmem_strerror(SHMEM_OK), "success") == 0);
    CHECK(strcmp(shmem_strerror(12345), "unknown error code") == 0);
    CHECK(strcmp(shmem_strerror(SHMEM_ERR_NOT_FOUND), shmem_strerror(SHMEM_ERR_IO)) != 0);
}

static void neighbours_of_a_closed_handle(void)
{
    shmem_value *h[3], *other;
    for (int i = 0; i < 3; i++)
        CHECK_RC(shmem_open(a, 64, SHMEM_CREATE, &h[i]), SHMEM_OK);
    CHECK_RC(shmem_open(b, 64, SHMEM_CREATE, &other), SHMEM_OK);
    set_str(h[0], "before");
    set_str(other, "other");

    shmem_close(h[1]);
    check_value(h[0], "before");
    check_value(h[2], "before");
    set_str(h[2], "after");
    check_value(h[0], "after");
    check_value(other, "other");

    /* The segment lives while any handle is open. */
    shmem_close(h[0]);
    shmem_value *again;
    CHECK_RC(shmem_open(a, 0, 0, &again), SHMEM_OK);
    check_value(again, "after");
    shmem_close(again);
    shmem_close(h[2]);
    CHECK_RC(shmem_open(a, 0, 0, &again), SHMEM_ERR_NOT_FOUND);
    check_value(other, "other");
    shmem_close(other);
}

int main(int argc, char *argv[])
{
    CHECK(argc == 2 && strlen(argv[1]) < 200);
    snprintf(a, sizeof a, "%s-a", argv[1]);
    snprintf(b, sizeof b, "%s-b", argv[1]);
    null_arguments();
    flags_and_codes();
    neighbours_of_a_closed_handle();
    printf("ok\n");
    return 0;
}
