#!/usr/bin/env python3
"""get/set of 64 B and 4 KiB from Python: shmem.Value against multiprocessing.shared_memory
(a plain bytes copy, no consistency) and shared-memory-dict (when installed), and get/set of a
64 B value among 10,000 keys and among 100: shmem.Map against shared-memory-dict, in one run.

    python3 python/bench/bench.py [--rust shmem-bench.json] [--quick]

Method (as shmem-bench's fast operations): after a warm-up, batches of N calls lasting
~50 µs are timed with one clock read each; one sample = batch time
/ N; p50 and p99 are over the batches. The whole list runs in 3 rounds (the samples of each
figure pooled), so a change of load during the run weighs on every figure alike. Every
operation is called through a lambda (or a function) from the loop; the first row is that loop
calling an empty lambda. With --rust (the --json output of shmem-bench, e.g. `shmem-bench
--quick --only shmem --json FILE`), each shmem row also shows its cost over the Rust
library's p50 for the same operation and size, also less the loop's empty call.

The map rows step through the keys (`key-00000`, ...), one per call, as shmem-bench's `map`
group does; shared-memory-dict pickles its whole dict into its segment and unpickles it on
each access, so its cost grows with the number of keys.
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack
from multiprocessing import shared_memory

import shmem

SIZES = [("64 B", 64), ("4 KiB", 4096)]
MAP_KEYS = [("10k keys", 10_000), ("100 keys", 100)]
MAP_VALUE = 64
ROUNDS = 3


def batch_size(call):
    """N such that N calls last ~50 µs (after a 20 ms warm-up)."""
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:
        call()
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            call()
        if time.perf_counter_ns() - t0 >= 50_000:
            return n
        n *= 2


def samples(call, batch, seconds):
    out = []
    clock = time.perf_counter_ns
    rng = range(batch)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = clock()
        for _ in rng:
            call()
        out.append((clock() - t0) / batch)
    return out


def rust_figures(path):
    if not path:
        return {}
    with open(path) as f:
        data = json.load(f)
    return {
        (m["name"], m["size"]): m["p50"]
        for m in data.get("measurements", [])
        if m.get("impl") == "shmem"
        and (m.get("name") in ("get", "set") or m.get("name", "").startswith("map "))
    }


def cases(stack, tag):
    """(op, impl, size label, size, callable or None when not installed)."""
    out = [("(loop + empty call)", "-", "-", 0, lambda: None)]
    try:
        from shared_memory_dict import SharedMemoryDict
    except ImportError:
        SharedMemoryDict = None
    for label, size in SIZES:
        data = os.urandom(size)
        v = stack.enter_context(shmem.Value(f"{tag}-{size}", size))
        v.set(data)
        out.append(("get", "shmem.Value", label, size, lambda v=v: v.get()))
        out.append(("set", "shmem.Value", label, size, lambda v=v, d=data: v.set(d)))

        shm = shared_memory.SharedMemory(create=True, size=size)
        stack.callback(shm.unlink)
        stack.callback(shm.close)
        buf = shm.buf
        stack.callback(buf.release)
        buf[:size] = data

        def set_mp(buf=buf, size=size, data=data):
            buf[:size] = data

        out.append(("get", "multiprocessing.shared_memory", label, size,
                    lambda buf=buf, size=size: bytes(buf[:size])))
        out.append(("set", "multiprocessing.shared_memory", label, size, set_mp))

        if SharedMemoryDict is None:
            out.append(("get/set", "shared-memory-dict", label, size, None))
            continue
        smd = SharedMemoryDict(name=f"{tag}-smd-{size}", size=4 * size + 1024)
        stack.callback(smd.shm.unlink)
        stack.callback(smd.shm.close)
        smd["k"] = data

        def set_smd(smd=smd, data=data):
            smd["k"] = data

        out.append(("get", "shared-memory-dict", label, size, lambda smd=smd: smd["k"]))
        out.append(("set", "shared-memory-dict", label, size, set_smd))
    out += map_cases(stack, tag, SharedMemoryDict)
    return out


def map_cases(stack, tag, SharedMemoryDict):
    """get and set of a 64 B value among n keys, one key after the other: shmem.Map and
    shared-memory-dict (its segment sized for its pickled dict, twice over)."""
    out = []
    data = os.urandom(MAP_VALUE)
    for label, n in MAP_KEYS:
        keys = [f"key-{i:05}" for i in range(n)]
        op = f"map get, {label}"
        m = stack.enter_context(shmem.Map(f"{tag}-map-{n}", n * 128 + 4096))
        for k in keys:
            m[k] = data
        nxt_get, nxt_set = itertools.cycle(keys).__next__, itertools.cycle(keys).__next__

        def map_set(m=m, nxt=nxt_set, data=data):
            m[nxt()] = data

        out.append((op, "shmem.Map", "64 B", MAP_VALUE,
                    lambda m=m, nxt=nxt_get: m[nxt()]))
        out.append((f"map set, {label}", "shmem.Map", "64 B", MAP_VALUE, map_set))
        if SharedMemoryDict is None:
            out.append((f"map get/set, {label}", "shared-memory-dict", "64 B", MAP_VALUE, None))
            continue
        smd = SharedMemoryDict(name=f"{tag}-smd-map-{n}", size=2 * n * (MAP_VALUE + 32) + 4096)
        stack.callback(smd.shm.unlink)
        stack.callback(smd.shm.close)
        smd.update({k: data for k in keys})
        sget, sset = itertools.cycle(keys).__next__, itertools.cycle(keys).__next__

        def smd_set(smd=smd, nxt=sset, data=data):
            smd[nxt()] = data

        out.append((op, "shared-memory-dict", "64 B", MAP_VALUE,
                    lambda smd=smd, nxt=sget: smd[nxt()]))
        out.append((f"map set, {label}", "shared-memory-dict", "64 B", MAP_VALUE, smd_set))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rust", help="shmem-bench --json output, for the cost over Rust")
    ap.add_argument("--quick", action="store_true", help="0.05 s per figure and round, not 0.25 s")
    args = ap.parse_args()
    seconds = 0.05 if args.quick else 0.25
    rust = rust_figures(args.rust)
    started = time.perf_counter()
    with ExitStack() as stack:
        todo = cases(stack, f"bench-{os.getpid()}")
        batches = [batch_size(c[4]) if c[4] else 0 for c in todo]
        pooled = [[] for _ in todo]
        for _ in range(ROUNDS):
            for i, case in enumerate(todo):
                if case[4] is not None:
                    pooled[i] += samples(case[4], batches[i], seconds)

    load = open("/proc/loadavg").read().split()[:3]
    print(f"Python {platform.python_version()} on {platform.machine()}, shmem {shmem.__version__}, "
          f"{ROUNDS} rounds, {time.perf_counter() - started:.1f} s, load average {' '.join(load)}")
    print()
    print("| op | impl | size | p50 ns | p99 ns | samples x ops | over Rust p50 (less the empty call) |")
    print("| --- | --- | --- | ---: | ---: | --- | --- |")
    base = statistics.median(pooled[0])
    for (op, impl, label, size, call), got, batch in zip(todo, pooled, batches):
        if call is None:
            print(f"| {op} | {impl} | {label} | not installed | | | |")
            continue
        got.sort()
        p50 = statistics.median(got)
        p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
        over = ""
        rust_op = op.replace("map get,", "map get_into,")
        r = rust.get((rust_op, size)) if impl in ("shmem.Value", "shmem.Map") else None
        if r is not None:
            over = f"+{p50 - r:.0f} ns (+{p50 - base - r:.0f} ns), Rust {r:.1f} ns"
        print(f"| {op} | {impl} | {label} | {p50:.0f} | {p99:.0f} | {len(got)} x {batch} | {over} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
