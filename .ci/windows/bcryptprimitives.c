/* A stand-in for bcryptprimitives.dll's ProcessPrng, which Rust 1.78 and later import and
 * Debian's Wine 8 lacks (every Rust program then exits with status 53 before main). Built by
 * .ci/windows.sh into the test prefix's system32; never committed as a binary, never shipped.
 * It fills the buffer from advapi32's RtlGenRandom (SystemFunction036), as ProcessPrng does
 * from the system's generator, and like ProcessPrng it always succeeds. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
