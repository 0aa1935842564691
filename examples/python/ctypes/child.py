#!/usr/bin/env python3
"""Child process: the seed's child, in Python with ctypes. Prints the string from libshmem's
shared memory."""

import ctypes

import libshmem

MAX_PATH = 260


def main() -> None:
    lib = libshmem.load()
    buf = ctypes.create_unicode_buffer(MAX_PATH)
    lib.GetSharedMem(buf, MAX_PATH)
    print(f"Child process read from shared memory: {buf.value}")


if __name__ == "__main__":
    main()
