/*
 * Stores a string in the default segment, then dies by SIGKILL: no destructor runs, so only
 * the kernel lets go of the segment.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <unistd.h>
#include <wchar.h>

#include <shmem_compat.h>

#include "check.h"

int main(void)
{
    CHECK_RC(shmem_compat_status(), SHMEM_OK);
    SetSharedMem(L"written before the crash");
    kill(getpid(), SIGKILL);
    return 1;
}
