"""Named shared memory for Linux with the lifetime of a Windows named file mapping.

- ``Value(name, capacity)``: a byte string shared between processes by name. Readers always
  get one complete value, never torn; ``wait``/``watch``/``changed`` sleep until it changes.
- ``Map(name, capacity)``: many keys in one segment, a mutable mapping (``m[key]``, ``in``,
  ``del``, ``len``, iteration) whose entries are never torn; ``wait``/``watch``/``changed``
  sleep until a key, or any key, changes.
- ``Segment(name, size)``: raw shared bytes, with ``buf`` a writable memoryview (numpy can
  view it without copying).
- ``unlink(name)``: removes a segment by name.

A transient segment (the default) is created zero-filled by its first user and freed when the
last one closes it, exits or crashes: no process owns it, so none can delete it from under the
others. Linux only.
"""

import atexit as _atexit

from ._shmem import (
    CorruptError,
    Error,
    Map,
    MapWatch,
    Segment,
    Value,
    Watch,
    __version__,
    _close_all,
    unlink,
)

__all__ = [
    "CorruptError",
    "Error",
    "Map",
    "MapWatch",
    "Segment",
    "Value",
    "Watch",
    "unlink",
    "__version__",
]

# Objects still alive at interpreter exit are not always freed, and a segment that is never
# detached would stay in /dev/shm after its last user exits. Closing them here detaches them
# (a segment whose buffer still has views detaches when the last view goes).
_atexit.register(_close_all)
