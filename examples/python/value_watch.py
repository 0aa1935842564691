#!/usr/bin/env python3
"""A writer and a watcher of one shmem.Value, in two processes.

    python3 examples/python/value_watch.py

The parent starts a child that watches the value (sleeping until each change, no polling)
while the parent publishes a few versions; the child prints each one, acknowledges it on a
second value, and stops at 'done'. (Without the acknowledgement, changes that come faster
than the watcher reads them merge into the latest one.)
"""

import subprocess
import sys

import shmem

CHILD = """
import sys, shmem
with shmem.Value.open(sys.argv[1]) as v, shmem.Value.open(sys.argv[1] + "-ack") as ack:
    watch = v.watch()
    ack.set(b"watching")
    for version, data in watch:
        print(f"child: version {version}: {data.decode()}", flush=True)
        ack.set(str(version))
        if data == b"done":
            break
"""


def main() -> int:
    name = f"example-watch-{__import__('os').getpid()}"
    with shmem.Value(name, capacity=4096) as v, shmem.Value(name + "-ack", 64) as ack:
        child = subprocess.Popen([sys.executable, "-c", CHILD, name])
        acked = ack.wait(0, timeout=30)  # the child is watching
        for text in ["mode=fast", "mode=safe", "done"]:
            version = v.set(text)
            print(f"parent: published version {version}", flush=True)
            acked = ack.wait(acked, timeout=30)
        return child.wait(30)


if __name__ == "__main__":
    sys.exit(main())
