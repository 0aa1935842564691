/*
 * The seed's overflow, fixed: a 10,000-character string is truncated to what the default
 * segment holds (1023 characters and the NUL), and GetSharedMem never writes past the length
 * it is given, not even for cchSize 0 and 1. Buffers end at an inaccessible page, so a write
 * or read one element too far crashes the program; run under valgrind or ASan too.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <wchar.h>

#include <shmem_compat.h>

#include "check.h"

#define LONG 10000
#define FITS 1023 /* 4096 bytes of 4-byte wchar_t, less the NUL */
#define SENTINEL ((wchar_t)0x5A5A5A5A)

static size_t page;

/* Two pages, the second inaccessible: returns the start of the inaccessible one. */
static char *guarded(void)
{
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    CHECK(mprotect(p + page, page, PROT_NONE) == 0);
    return p + page;
}

static wchar_t pattern(size_t i)
{
    return (wchar_t)(L'a' + i % 26);
}

/* Stores the LONG-character pattern (more than fits). */
static void set_long_string(void)
{
    wchar_t *s = malloc((LONG + 1) * sizeof(wchar_t));
    CHECK(s != NULL);
    for (size_t i = 0; i < LONG; i++)
        s[i] = pattern(i);
    s[LONG] = 0;
    SetSharedMem(s);
    free(s);
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_RC(shmem_compat_status(), SHMEM_OK);

    set_long_string();

    /* A large buffer: exactly FITS characters came back, and nothing after the NUL changed. */
    wchar_t *big = malloc(2 * LONG * sizeof(wchar_t));
    CHECK(big != NULL);
    for (size_t i = 0; i < 2 * LONG; i++)
        big[i] = SENTINEL;
    GetSharedMem(big, 2 * LONG);
    CHECK(wcslen(big) == FITS);
    for (size_t i = 0; i < FITS; i++)
        CHECK(big[i] == pattern(i));
    for (size_t i = FITS + 1; i < 2 * LONG; i++)
        CHECK(big[i] == SENTINEL);
    free(big);

    /* Buffers that end where the inaccessible page starts. */
    wchar_t *end = (wchar_t *)guarded();
    GetSharedMem(end, 0); /* writes nothing: would crash */
    GetSharedMem(NULL, 100);
    GetSharedMem(end - 1, 1);
    CHECK(end[-1] == 0);
    end[-2] = SENTINEL;
    GetSharedMem(end - 1, 1);
    CHECK(end[-1] == 0 && end[-2] == SENTINEL);
    GetSharedMem(end - 10, 10);
    CHECK(wcslen(end - 10) == 9);
    for (size_t i = 0; i < 9; i++)
        CHECK(end[-10 + (long)i] == pattern(i));
    size_t units = page / sizeof(wchar_t); /* the whole accessible page */
    GetSharedMem(end - units, (uint32_t)units);
    CHECK(wcslen(end - units) == (units - 1 < FITS ? units - 1 : FITS));

    /* A short string right before the inaccessible page: never read past its NUL. */
    wchar_t *tail = end - 3;
    tail[0] = L'o';
    tail[1] = L'k';
    tail[2] = 0;
    SetSharedMem(tail);
    wchar_t out[8];
    GetSharedMem(out, 8);
    CHECK(wcscmp(out, L"ok") == 0);

    /* NULL stores the empty string. */
    SetSharedMem(NULL);
    out[0] = L'x';
    GetSharedMem(out, 8);
    CHECK(out[0] == 0);

    /* Leave the long string for the test to inspect through its own handle. */
    set_long_string();
    printf("ok\n");
    return 0;
}
