/*
 * libshmem_compat: the original DLL's load-time attach and SetSharedMem/GetSharedMem, written
 * over libshmem's handle API (include/shmem_compat.h says what they do).
 *
 * Load and unload (what DllMain did): a pointer to attach_at_load sits in .init_array, which
 * the dynamic loader (or the C runtime, for a program linked with libshmem_compat.a) calls when
 * the library is loaded, by dlopen or at program start; detach_at_unload in .fini_array runs at
 * the dlclose of the last reference and at exit. A process that crashes runs neither; the
 * kernel then releases its hold on the segment (see the Rust library's segment protocol).
 *
 * State: `handle` is the default segment's handle (NULL before the attach, after a failed one,
 * and after the detach) and `status` the attach's result. No lock: the detach swaps the handle
 * out and closes it, and libshmem makes closing safe against calls in progress on other
 * threads (they complete, or return SHMEM_ERR_CLOSED and store or read nothing). So a call
 * racing the unload at exit is harmless, and a child forked while another thread was inside a
 * call still exits. If the constructor did not run (a loader that skips .init_array), the
 * first call attaches instead (pthread_once); after the destructor has run, the functions
 * report SHMEM_ERR_NOT_FOUND rather than attach again, which nothing would then undo.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shmem_compat.h"

/* The seed's object name, used when SHMEM_COMPAT_NAME is unset or empty. */
#define DEFAULT_NAME "dllmemfilemap"
/* The seed's object size, as the value's capacity in bytes. */
#define CAPACITY 4096

_Static_assert(sizeof(wchar_t) == 4, "wchar_t is 32-bit on Linux");

static _Atomic(shmem_value *) handle;
static atomic_int status = SHMEM_ERR_NOT_FOUND;
static atomic_bool detached;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void attach(void)
{
    const char *name = getenv("SHMEM_COMPAT_NAME");
    if (name == NULL || name[0] == '\0')
        name = DEFAULT_NAME;
    shmem_value *v = NULL;
    int rc = shmem_open(name, CAPACITY, SHMEM_CREATE, &v);
    if (rc == SHMEM_OK)
        atomic_store(&handle, v);
    atomic_store(&status, rc);
}

static void attach_at_load(void)
{
    pthread_once(&once, attach);
}

static void detach_at_unload(void)
{
    atomic_store(&detached, true);
    shmem_close(atomic_exchange(&handle, NULL)); /* NULL is ignored */
}

__attribute__((used, section(".init_array"))) static void (*attach_entry)(void) = attach_at_load;
__attribute__((used, section(".fini_array"))) static void (*detach_entry)(void) = detach_at_unload;

/* The default segment's handle, attaching first if nothing tried yet; NULL with *code set when
 * there is none. */
static shmem_value *current(int *code)
{
    if (atomic_load(&detached)) {
        *code = SHMEM_ERR_NOT_FOUND;
        return NULL;
    }
    pthread_once(&once, attach);
    shmem_value *v = atomic_load(&handle);
    *code = v != NULL ? SHMEM_OK : atomic_load(&status);
    if (v == NULL && *code == SHMEM_OK)
        *code = SHMEM_ERR_NOT_FOUND; /* detached meanwhile */
    return v;
}

int shmem_compat_status(void)
{
    int code;
    current(&code);
    return code;
}

void SetSharedMem(const wchar_t *s)
{
    int code;
    shmem_value *v = current(&code);
    size_t capacity;
    if (v == NULL || shmem_capacity(v, &capacity) != SHMEM_OK || capacity < sizeof(wchar_t))
        return;
    /* Characters that fit with the NUL; s is read up to its NUL or that many units. */
    size_t max = capacity / sizeof(wchar_t) - 1;
    size_t n = s == NULL ? 0 : wcsnlen(s, max);
    wchar_t small[CAPACITY / sizeof(wchar_t)];
    wchar_t *units = n < sizeof small / sizeof small[0] ? small : malloc((n + 1) * sizeof *units);
    if (units == NULL)
        return;
    if (n > 0)
        wmemcpy(units, s, n);
    units[n] = L'\0';
    (void)shmem_set(v, units, (n + 1) * sizeof *units);
    if (units != small)
        free(units);
}

void GetSharedMem(wchar_t *buf, unsigned int cchSize)
{
    if (buf == NULL || cchSize == 0)
        return;
    size_t n = 0; /* characters copied to buf */
    int code;
    shmem_value *v = current(&code);
    wchar_t small[CAPACITY / sizeof(wchar_t)];
    wchar_t *units = small;
    size_t cap = sizeof small, len = 0;
    int rc = v == NULL ? code : shmem_get(v, units, cap, &len, NULL);
    /* A segment made larger by another program can hold a longer value: read it whole, so
     * the copy is one snapshot. It may grow again meanwhile; retry with the new length. */
    while (rc == SHMEM_ERR_BUFFER_TOO_SMALL) {
        if (units != small)
            free(units);
        cap = len;
        units = malloc(cap);
        if (units == NULL)
            break;
        rc = shmem_get(v, units, cap, &len, NULL);
    }
    if (rc == SHMEM_OK) {
        /* A value written by another program may lack the NUL or end in a partial unit. */
        size_t stored = len / sizeof(wchar_t);
        while (n < stored && n < (size_t)cchSize - 1 && units[n] != L'\0')
            n++;
        wmemcpy(buf, units, n);
    }
    if (units != small)
        free(units);
    buf[n] = L'\0';
}
