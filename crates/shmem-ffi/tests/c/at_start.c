/*
 * A program linked with libshmem (shared or static) has the default segment attached before
 * main runs, and detached at exit.
 *
 *   at_start FILE      (the default segment's file)
 */
#define _POSIX_C_SOURCE 200809L

#include <unistd.h>
#include <wchar.h>

#include <shmem_compat.h>

#include "check.h"

int main(int argc, char *argv[])
{
    CHECK(argc == 2);
    CHECK(access(argv[1], F_OK) == 0); /* before any call into the library */
    CHECK_RC(shmem_compat_status(), SHMEM_OK);
    SetSharedMem(L"attached at start");
    wchar_t buf[32];
    GetSharedMem(buf, 32);
    CHECK(wcscmp(buf, L"attached at start") == 0);
    printf("ok\n");
    return 0;
}
