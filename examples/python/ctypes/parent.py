#!/usr/bin/env python3
"""Parent process: the seed's parent, in Python with ctypes.

Stores a string in libshmem's shared memory, starts the child given as the first argument
(a Python file is run with this interpreter) and waits for it.

    SHMEM_LIB=target/debug/libshmem.so python3 examples/python/ctypes/parent.py examples/python/ctypes/child.py
"""

import subprocess
import sys

import libshmem


def main() -> int:
    if len(sys.argv) == 1:
        print("Please specify an input file")
        return 0
    lib = libshmem.load()
    libshmem.check_attached(lib)

    print("\nProcess is writing to shared memory...\n", flush=True)
    lib.SetSharedMem("This is a test string")

    command = sys.argv[1:]
    if command[0].endswith(".py"):
        command.insert(0, sys.executable)
    return 0 if subprocess.run(command).returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
