#!/usr/bin/env python3
"""get/set of 64 B and 4 KiB from Python: shmem.Value against multiprocessing.shared_memory
(a plain bytes copy, no consistency) and shared-memory-dict (when installed), in one run.

    python3 python/bench/bench.py [--rust shmem-bench.json] [--quick]

Method (as shmem-bench's fast operations): a warm-up estimates the cost of one call, then
batches of N calls lasting ~50 µs are timed with one clock read each; one sample = batch time
/ N; p50 and p99 are over the batches. Every operation is called through a lambda (or a
function) from the loop; the first row is that loop calling an empty lambda. With --rust (the --json output of shmem-bench), each
shmem row also shows its cost over the Rust library's p50 for the same operation and size.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from multiprocessing import shared_memory

import shmem

SIZES = [("64 B", 64), ("4 KiB", 4096)]


def measure(call, seconds):
    # Warm-up: estimate the cost, then pick N so that a batch lasts ~50 µs.
    n, start = 0, time.perf_counter_ns()
    while time.perf_counter_ns() - start < 20_000_000:
        call()
        n += 1
    per_call = (time.perf_counter_ns() - start) / n
    batch = max(1, int(50_000 / per_call))
    samples = []
    end = time.perf_counter() + seconds
    clock = time.perf_counter_ns
    rng = range(batch)
    while time.perf_counter() < end:
        t0 = clock()
        for _ in rng:
            call()
        samples.append((clock() - t0) / batch)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "samples": len(samples),
        "batch": batch,
    }


def rust_figures(path):
    if not path:
        return {}
    with open(path) as f:
        data = json.load(f)
    out = {}
    for m in data.get("measurements", []):
        if m.get("impl") == "shmem" and m.get("name") in ("get", "set"):
            out[(m["name"], m["size"])] = m["p50"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rust", help="shmem-bench --json output, for the cost over Rust")
    ap.add_argument("--quick", action="store_true", help="0.1 s per figure instead of 0.5 s")
    args = ap.parse_args()
    seconds = 0.1 if args.quick else 0.5
    rust = rust_figures(args.rust)
    rows = [("(loop + empty call)", "-", "-", measure(lambda: None, seconds))]
    tag = f"bench-{os.getpid()}"

    for label, size in SIZES:
        data = os.urandom(size)
        with shmem.Value(f"{tag}-{size}", size) as v:
            v.set(data)
            rows.append(("get", "shmem.Value", label, measure(lambda: v.get(), seconds)))
            rows.append(("set", "shmem.Value", label, measure(lambda: v.set(data), seconds)))

        shm = shared_memory.SharedMemory(create=True, size=size)
        try:
            buf = shm.buf
            buf[:size] = data

            def set_mp():
                buf[:size] = data

            get_mp = lambda: bytes(buf[:size])  # noqa: E731
            rows.append(("get", "multiprocessing.shared_memory", label, measure(get_mp, seconds)))
            rows.append(("set", "multiprocessing.shared_memory", label, measure(set_mp, seconds)))
            del buf
        finally:
            shm.close()
            shm.unlink()

        try:
            from shared_memory_dict import SharedMemoryDict
        except ImportError:
            rows.append(("get/set", "shared-memory-dict", label, None))
        else:
            smd = SharedMemoryDict(name=f"{tag}-smd-{size}", size=4 * size + 1024)
            try:
                smd["k"] = data
                rows.append(("get", "shared-memory-dict", label, measure(lambda: smd["k"], seconds)))

                def set_smd():
                    smd["k"] = data

                rows.append(("set", "shared-memory-dict", label, measure(set_smd, seconds)))
            finally:
                smd.shm.close()
                smd.shm.unlink()

    print(f"Python {platform.python_version()} on {platform.machine()}, shmem {shmem.__version__}")
    print()
    print("| op | impl | size | p50 ns | p99 ns | samples x ops | over Rust p50 |")
    print("| --- | --- | --- | ---: | ---: | --- | ---: |")
    for op, impl, label, m in rows:
        if m is None:
            print(f"| {op} | {impl} | {label} | not installed | | | |")
            continue
        over = ""
        r = rust.get((op, label)) if impl == "shmem.Value" else None
        if r is not None:
            over = f"+{m['p50'] - r:.0f} ns ({r:.1f} ns in Rust)"
        print(
            f"| {op} | {impl} | {label} | {m['p50']:.0f} | {m['p99']:.0f} | "
            f"{m['samples']} x {m['batch']} | {over} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
