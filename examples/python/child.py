#!/usr/bin/env python3
"""Child process: the seed's child, with the `shmem` package. Prints the string the parent
stored in the default shared memory."""

from shmem.compat import GetSharedMem


def main() -> None:
    print(f"Child process read from shared memory: {GetSharedMem()}")


if __name__ == "__main__":
    main()
