#!/usr/bin/env python3
"""Medians of perf/io_uring/run.sh's runs.csv, per (mode, batch size, variant), and the
ratio io_uring (depth 1, epoll) / storage thread. usage: summarize.py runs.csv"""
import csv, statistics, sys
from collections import defaultdict

def label(row):
    if row["variant"] != "uring":
        return row["variant"]
    name = "uring" if row["depth"] == "1" else f"uring-d{row['depth']}"
    return name + ("" if row["wait"] == "epoll" else "-" + row["wait"])

runs = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    runs[(row["mode"], int(row["batch_bytes"]), label(row))].append(row)

order = ["thread", "uring", "uring-d2", "uring-ring", "inline"]
metrics = [("batches_per_s", "durable batches/s", 0), ("groups_per_s", "groups/s", 0),
           ("mb_per_s", "MB/s", 1), ("batches_per_group", "batches/group", 1),
           ("p50_us", "p50 us", 0), ("p99_us", "p99 us", 0),
           ("cpu_us_per_batch", "CPU us/batch", 1), ("vcsw_per_batch", "vol. cs/batch", 2)]

def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)

for mode in ["closed", "rate"]:
    print(f"\n### mode {mode}: medians, n runs each\n")
    print("| batch | variant | n | " + " | ".join(m[1] for m in metrics) + " | load1 range |")
    print("|---:|:---|--:|" + "---:|" * len(metrics) + ":--|")
    for size in sorted({k[1] for k in runs if k[0] == mode}):
        for name in order:
            rows = runs.get((mode, size, name))
            if not rows:
                continue
            cells = [f"{med(rows, key):,.{digits}f}" for key, _, digits in metrics]
            loads = [float(r["load1"]) for r in rows]
            print(f"| {size // 1024} KiB | {name} | {len(rows)} | " + " | ".join(cells)
                  + f" | {min(loads):.1f}-{max(loads):.1f} |")
    print(f"\nratio uring / thread (medians; >1 means io_uring has more of it), mode {mode}:\n")
    print("| batch | " + " | ".join(m[1] for m in metrics) + " |")
    print("|---:|" + "---:|" * len(metrics))
    for size in sorted({k[1] for k in runs if k[0] == mode}):
        a, b = runs.get((mode, size, "thread")), runs.get((mode, size, "uring"))
        if not a or not b:
            continue
        cells = []
        for key, _, _ in metrics:
            x, y = med(a, key), med(b, key)
            cells.append(f"{y / x:.2f}" if x else "-")
        print(f"| {size // 1024} KiB | " + " | ".join(cells) + " |")
