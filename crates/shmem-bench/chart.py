#!/usr/bin/env python3
"""Draws shmem against each peer and limit from a `shmem-bench --json` file, as an SVG.

    python3 crates/shmem-bench/chart.py RUN.json docs/benchmarks.svg

One pair of bars per comparison of the run's ratio table with a limit or a peer (p50; both
sides were timed in alternating blocks), on a log scale, goals first. Standard library only.
"""
import json
import math
import sys
from html import escape

ROW, BAR, LEFT, RIGHT, TOP = 34, 12, 430, 90, 64
WIDTH = 1100
OURS, OTHER = "#1f6feb", "#d4761c"


def rows(run):
    seen = set()
    for r in run["ratios"]:
        ours, other = r["ours_p50"], r["against_p50"]
        if ours is None or other is None or ours <= 0 or other <= 0:
            continue
        label = r["name"]
        if label in seen:
            continue
        seen.add(label)
        mine, theirs = label.split(" vs ", 1)
        if theirs.startswith("shmem "):
            continue  # shmem against itself: in the table, not the chart
        yield mine, theirs, ours, other, r.get("holds"), r.get("mark", "")


def ns(v):
    return f"{v:.3g} ns" if v < 1000 else f"{v / 1000:.3g} µs" if v < 1e6 else f"{v / 1e6:.3g} ms"


def main(src, dst):
    with open(src) as f:
        run = json.load(f)
    data = list(rows(run))
    lo = min(min(d[2], d[3]) for d in data)
    hi = max(max(d[2], d[3]) for d in data)
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    span = WIDTH - LEFT - RIGHT

    def x(v):
        return LEFT + (math.log10(v) - d0) / (d1 - d0) * span

    height = TOP + ROW * len(data) + 40
    m = run.get("machine", {})
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">shmem (blue) against '
        f'limits and peers (orange): ns, log scale, lower is faster</text>',
        f'<text x="10" y="38" fill="#555">{escape(m.get("cpu", ""))}, {m.get("cpus", "")} CPUs, '
        f'load average {escape(str(m.get("loadavg_before", "")))} (shared machine); p50, '
        f'pairs timed in alternating blocks; [goal] &#10003; held, &#10007; not held</text>',
    ]
    for dec in range(d0, d1 + 1):
        gx = x(10**dec)
        unit = ["1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms"]
        label = unit[dec] if 0 <= dec < len(unit) else f"1e{dec} ns"
        out.append(f'<line x1="{gx:.1f}" y1="{TOP - 8}" x2="{gx:.1f}" '
                   f'y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{gx:.1f}" y="{TOP - 12}" text-anchor="middle" '
                   f'fill="#555">{label}</text>')
    for i, (mine, theirs, ours, other, holds, mark) in enumerate(data):
        y = TOP + i * ROW
        flag = {True: " \u2713", False: " \u2717"}.get(holds, "")
        goal = f" [{mark}]" if mark else ""
        out.append(f'<text x="{LEFT - 8}" y="{y + 11}" text-anchor="end">'
                   f'{escape(mine)}{escape(flag)}</text>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 25}" text-anchor="end" fill="#555">'
                   f'vs {escape(theirs)}{escape(goal)}</text>')
        for j, (v, colour) in enumerate([(ours, OURS), (other, OTHER)]):
            by = y + 2 + j * (BAR + 2)
            out.append(f'<rect x="{LEFT}" y="{by}" width="{max(x(v) - LEFT, 1):.1f}" '
                       f'height="{BAR}" fill="{colour}"/>')
            out.append(f'<text x="{x(v) + 4:.1f}" y="{by + 10}" font-size="11">'
                       f'{ns(v)}</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
