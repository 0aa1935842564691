"""Loads libshmem_compat with ctypes and declares the functions the examples use.

The library is $SHMEM_LIB when set, else the build of this repository that `make`
leaves in target/release/capi/libshmem_compat.so (it loads libshmem.so.0 from its
own directory). Loading it attaches the default shared memory, as a Windows DLL's
DllMain did; the segment is detached when the process exits.
wchar_t is 32-bit on Linux, which is what ctypes.c_wchar is there.
"""

import ctypes
import os
from pathlib import Path

DEFAULT = (
    Path(__file__).resolve().parents[3] / "target" / "release" / "capi" / "libshmem_compat.so"
)


def load() -> ctypes.CDLL:
    lib = ctypes.CDLL(os.environ.get("SHMEM_LIB") or str(DEFAULT))
    lib.SetSharedMem.argtypes = [ctypes.c_wchar_p]
    lib.SetSharedMem.restype = None
    lib.GetSharedMem.argtypes = [ctypes.c_wchar_p, ctypes.c_uint32]
    lib.GetSharedMem.restype = None
    lib.shmem_compat_status.argtypes = []
    lib.shmem_compat_status.restype = ctypes.c_int
    lib.shmem_strerror.argtypes = [ctypes.c_int]
    lib.shmem_strerror.restype = ctypes.c_char_p
    return lib


def check_attached(lib: ctypes.CDLL) -> None:
    """Raises if the library could not attach its shared memory when it was loaded."""
    status = lib.shmem_compat_status()
    if status != 0:
        message = lib.shmem_strerror(status).decode()
        raise OSError(f"libshmem could not attach its shared memory: {message}")
