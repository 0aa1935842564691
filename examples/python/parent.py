#!/usr/bin/env python3
"""Parent process: the seed's parent, with the `shmem` package (pip install ./python).

Importing shmem.compat attaches the default shared memory, as loading the seed's DLL did.
The parent stores a string in it, starts the child given as the first argument (a Python file
is run with this interpreter) and waits for it; the memory is freed when both have exited.

    python3 examples/python/parent.py examples/python/child.py
"""

import subprocess
import sys

from shmem.compat import SetSharedMem


def main() -> int:
    if len(sys.argv) == 1:
        print("Please specify an input file")
        return 0
    print("\nProcess is writing to shared memory...\n", flush=True)
    SetSharedMem("This is a test string")

    command = sys.argv[1:]
    if command[0].endswith(".py"):
        command.insert(0, sys.executable)
    return 0 if subprocess.run(command).returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
