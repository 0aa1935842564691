/*
 * Load-time attach and unload-time detach through dlopen/dlclose.
 *
 *   dlopen LIB FILE MODE
 *
 * LIB is libshmem.so, FILE the default segment's file ($SHMEM_DIR/shmem.$SHMEM_COMPAT_NAME).
 * MODE "alone": nobody else uses the segment, so it appears at load and is freed at the last
 * dlclose; "held": another process holds it, so it stays and keeps its value.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "check.h"

typedef int (*status_fn)(void);
typedef void (*set_fn)(const wchar_t *);
typedef void (*get_fn)(wchar_t *, unsigned int);

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void *load(const char *lib)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        exit(1);
    }
    return h;
}

static void *sym(void *h, const char *name)
{
    void *f = dlsym(h, name);
    if (f == NULL) {
        fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
        exit(1);
    }
    return f;
}

int main(int argc, char *argv[])
{
    if (argc != 4) {
        fprintf(stderr, "usage: dlopen LIB FILE alone|held\n");
        return 2;
    }
    const char *lib = argv[1], *file = argv[2];
    int held = strcmp(argv[3], "held") == 0;
    wchar_t buf[64];

    for (int round = 0; round < 2; round++) {
        CHECK(exists(file) == held);

        /* Loading attaches, before any function is called. */
        void *h1 = load(lib);
        CHECK(exists(file));
        CHECK(((status_fn)sym(h1, "shmem_compat_status"))() == 0);

        get_fn get = (get_fn)sym(h1, "GetSharedMem");
        get(buf, 64);
        /* Alone, each load makes a new, empty segment; held, the value stays between loads. */
        CHECK(wcscmp(buf, held && round == 1 ? L"loaded twice" : L"") == 0);
        ((set_fn)sym(h1, "SetSharedMem"))(L"loaded twice");

        /* A second reference to the library: the first dlclose does not unload it. */
        void *h2 = load(lib);
        CHECK(dlclose(h1) == 0);
        CHECK(exists(file));
        get = (get_fn)sym(h2, "GetSharedMem");
        get(buf, 64);
        CHECK(wcscmp(buf, L"loaded twice") == 0);

        /* The last dlclose unloads the library and detaches. */
        CHECK(dlclose(h2) == 0);
        CHECK(exists(file) == held);
    }
    printf("ok\n");
    return 0;
}
