/*
 * Child process: the seed's child, ported to Linux. Reads the string from the shared memory
 * that libshmem_compat attached when this program was loaded, and prints it.
 */
#include <locale.h>
#include <stdio.h>
#include <wchar.h>

#include <shmem_compat.h>

#define MAX_PATH 260

int main(void)
{
    wchar_t cBuf[MAX_PATH];

    /* %ls converts wide characters to the locale's encoding: use the environment's. */
    setlocale(LC_ALL, "");

    GetSharedMem(cBuf, MAX_PATH);

    printf("Child process read from shared memory: %ls\n", cBuf);

    return 0;
}
