"""``Segment.buf``: a memoryview onto the shared pages, and what keeps them mapped.

The limited C API of Python 3.8 (the floor of this package's abi3 wheel) gives extension
types no buffer protocol, so the view is a ctypes array placed at the mapping's address.

SAFETY: ``address`` and ``size`` come from a live ``_Mapping``, which holds the Rust segment
and so its mapping. The array keeps the ``_Mapping`` as an attribute, every memoryview made from
the array keeps the array (its ``obj``), and every slice, cast or numpy array made from such a
view keeps that view. So the pages stay mapped while anything can still reach them, and are
unmapped only after the last view is gone. This is the one place in the package that makes a
view from an address.
"""

import ctypes

from ._shmem import _Mapping


def view(mapping: _Mapping) -> memoryview:
    array = (ctypes.c_ubyte * mapping.size).from_address(mapping.address)
    array._shmem_mapping = mapping  # type: ignore[attr-defined]
    return memoryview(array).cast("B")
