/*
 * libshmem_compat: the original Windows DLL's API on top of libshmem.
 *
 * Link with -lshmem_compat -lshmem (pkg-config --cflags --libs shmem-compat). Linking this
 * library, or loading it with dlopen, attaches a default segment when it is loaded and detaches
 * it when it is unloaded (dlclose or exit), like DllMain; SetSharedMem and GetSharedMem store
 * and read a wide string in it. Programs that use only the handle API of <shmem.h> link
 * libshmem alone, which attaches nothing at load.
 *
 * The default segment is the value segment named by the environment variable
 * SHMEM_COMPAT_NAME, or "dllmemfilemap" when that is unset or empty, in the directory
 * $SHMEM_DIR (default /dev/shm), with a capacity of 4096 bytes, transient: the first process
 * to attach creates it zero-filled, and it is freed when the last process using it unloads the
 * library, exits or crashes. A failed attach does not abort the program and is not retried:
 * shmem_compat_status reports it.
 *
 * wchar_t is 32-bit on Linux (4 bytes, one UTF-32 code unit per character), not 16-bit as on
 * Windows: port L"..." strings as they are, but not code that assumes 2-byte characters.
 * Strings are stored as their wchar_t code units (native byte order) followed by a NUL unit:
 * 1023 characters and the NUL fit the default 4096 bytes.
 */
#ifndef SHMEM_COMPAT_H
#define SHMEM_COMPAT_H

#include <wchar.h>

#include <shmem.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * 0 (SHMEM_OK) when the default segment is attached, else the error code of the failed attach
 * (see shmem_strerror), or SHMEM_ERR_NOT_FOUND once the library has been unloaded.
 */
int shmem_compat_status(void);

/**
 * Stores the NUL-terminated wide string s in the default segment; NULL stores the empty
 * string. wchar_t is 32-bit on Linux: each character is one 4-byte code unit. A string longer
 * than the segment holds (1023 characters and the NUL, for 4096 bytes) is truncated to that
 * many characters; nothing is ever written past the segment, and s is not read past its NUL or
 * that limit. Readers see the old or the new string, never a mix.
 *
 * Nothing is stored if the default segment is not attached (see shmem_compat_status), or if
 * another live process has been writing it for 5 seconds.
 */
void SetSharedMem(const wchar_t *s);

/**
 * Copies the string stored in the default segment into buf: at most cchSize - 1 characters
 * (4-byte wchar_t units on Linux) and a terminating NUL, so buf always ends up NUL-terminated.
 * With cchSize == 0 or a NULL buf, writes nothing. The string is read as one consistent
 * snapshot, never half of one SetSharedMem and half of another. If the default segment is not
 * attached (see shmem_compat_status), stores the empty string.
 */
void GetSharedMem(wchar_t *buf, unsigned int cchSize);

#ifdef __cplusplus
}
#endif

#endif /* SHMEM_COMPAT_H */
