/*
 * A program that uses only libshmem's handle API attaches nothing it did not open: no default
 * segment at load time, and only its own segment while it has it open.
 *
 *   no_attach DIR NAME          (DIR is $SHMEM_DIR; linked with libshmem)
 *   no_attach DIR NAME LIB      (built with -DLOAD_WITH_DLOPEN: loads LIB with dlopen)
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <string.h>

#include <shmem.h>

#include "check.h"

#ifdef LOAD_WITH_DLOPEN
#include <dlfcn.h>
static int (*open_fn)(const char *, size_t, uint32_t, shmem_value **);
static void (*close_fn)(shmem_value *);
static const char *(*strerror_fn)(int);
#define shmem_open open_fn
#define shmem_close close_fn
#define shmem_strerror strerror_fn
#endif

/* CHECKs that DIR holds exactly `want` (a file name, or NULL for nothing). */
static void check_dir(const char *dir, const char *want)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (want == NULL || strcmp(e->d_name, want) != 0) {
            fprintf(stderr, "unexpected file in %s: %s\n", dir, e->d_name);
            exit(1);
        }
        found++;
    }
    closedir(d);
    CHECK(found == (want != NULL));
}

int main(int argc, char *argv[])
{
    CHECK(argc == 3 || argc == 4);
    const char *dir = argv[1], *name = argv[2];
    char file[512];
    snprintf(file, sizeof file, "shmem.%s", name);
    check_dir(dir, NULL); /* nothing at load time */

#ifdef LOAD_WITH_DLOPEN
    CHECK(argc == 4);
    void *lib = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL);
    check_dir(dir, NULL); /* nothing when loaded */
    *(void **)&open_fn = dlsym(lib, "shmem_open");
    *(void **)&close_fn = dlsym(lib, "shmem_close");
    *(void **)&strerror_fn = dlsym(lib, "shmem_strerror");
    CHECK(open_fn != NULL && close_fn != NULL && strerror_fn != NULL);
#endif

    shmem_value *v;
    CHECK_RC(shmem_open(name, 64, SHMEM_CREATE, &v), SHMEM_OK);
    check_dir(dir, file); /* ours only */
    shmem_close(v);
    check_dir(dir, NULL);
#ifdef LOAD_WITH_DLOPEN
    CHECK(dlclose(lib) == 0);
    check_dir(dir, NULL);
#endif
    printf("ok\n");
    return 0;
}
