#!/usr/bin/env python3
"""Many keys in one shmem.Map, shared by two processes, with a wait on one key.

    python3 examples/python/map_watch.py [NAME]

The parent stores the state of two workers, then starts a child that waits for the key "job"
(sleeping until it is set, no polling), prints every entry of one consistent version in key
order and answers on the key "ack"; the parent sets "job", waits for the answer on "ack" and
prints it. The map is transient: it is gone when both processes have let go of it.
"""

import os
import subprocess
import sys

import shmem

CHILD = """
import sys, shmem
with shmem.Map.open(sys.argv[1]) as m:
    version = m.wait("job", since=0, timeout=30)
    print(f"child: job set at version {version}: {m['job'].decode()}", flush=True)
    for key, data in sorted(m.items()):
        print(f"child:   {key} = {data.decode()}", flush=True)
    m["ack"] = f"seen {len(m)} keys"
"""


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else f"example-map-{os.getpid()}"
    with shmem.Map(name, capacity=64 * 1024) as m:
        m["worker/1"] = "idle"
        m["worker/2"] = "busy"
        print(f"parent: two workers stored, map version {m.version}", flush=True)
        child = subprocess.Popen([sys.executable, "-c", CHILD, name])
        m["job"] = "go"
        m.wait("ack", since=0, timeout=30)
        print(f"parent: the child says: {m['ack'].decode()}", flush=True)
        return child.wait(30)


if __name__ == "__main__":
    sys.exit(main())
