"""The seed's two functions, ``SetSharedMem`` and ``GetSharedMem``, over the default segment.

Importing this module attaches the default segment, as loading the original DLL did in its
``DllMain``: the value named by ``$SHMEM_COMPAT_NAME`` (``dllmemfilemap`` when unset or empty)
in ``$SHMEM_DIR`` (default ``/dev/shm``), 4096 bytes, transient, so the first process creates
it empty and it is freed when the last one exits. A failed attach makes the import fail, as a
failed ``DllMain`` made ``LoadLibrary`` fail.

The string is stored as ``libshmem`` stores it (its ``wchar_t`` units, 4 bytes each in native
byte order, then a NUL unit), so Python and C programs share it. At most 1023 characters fit;
a longer string is truncated.
"""

import os
import sys

from ._shmem import Value

DEFAULT_NAME = "dllmemfilemap"
CAPACITY = 4096
_UNIT = 4
_ENCODING = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"
MAX_CHARS = CAPACITY // _UNIT - 1

_value = Value(
    os.environ.get("SHMEM_COMPAT_NAME") or DEFAULT_NAME,
    CAPACITY,
    dir=os.environ.get("SHMEM_DIR") or None,
)


def SetSharedMem(s: str) -> None:
    """Stores ``s`` (at most 1023 characters; the rest is cut) in the default segment.
    Readers see the old or the new string, never a mix."""
    if not isinstance(s, str):
        raise TypeError(f"SetSharedMem stores a str, not {type(s).__name__}")
    units = s[:MAX_CHARS].encode(_ENCODING, errors="surrogatepass")
    _value.set(units + bytes(_UNIT))


def GetSharedMem() -> str:
    """The string stored in the default segment ('' before the first ``SetSharedMem``)."""
    data = _value.get()
    chars = []
    for i in range(0, len(data) - len(data) % _UNIT, _UNIT):
        unit = int.from_bytes(data[i : i + _UNIT], sys.byteorder)
        if unit == 0:
            break
        # A C writer may store any wchar_t; what is not a code point reads as U+FFFD.
        chars.append(chr(unit) if unit <= 0x10FFFF else "\ufffd")
    return "".join(chars)


def segment_name() -> str:
    """The name of the default segment this process attached."""
    return _value.name
