#!/usr/bin/env python3
"""Medians of perf/io_uring/run.sh's runs.csv, per (mode, batch size, variant), and each
io_uring variant's ratio to the storage thread, paired by repeat. usage: summarize.py runs.csv"""
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
           ("cpu_us_per_batch", "CPU us/batch", 1), ("vcsw_per_batch", "vol. cs/batch", 2),
           ("lag_p99_us", "loop lag p99 us", 0), ("sync_p50_us", "sync p50 us", 0)]

def med(rows, key):
    return statistics.median(float(r.get(key) or 0) for r in rows)

for mode in [m for m in ["closed", "rate"] if any(k[0] == m for k in runs)]:
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
    print(f"\nio_uring / thread, mode {mode}: per repeat, the ratio of two runs made back to back; the median "
          "of those ratios and their range (>1: io_uring has more of it)\n")
    keys = [("batches_per_s", "durable batches/s"), ("p50_us", "p50 latency"), ("p99_us", "p99 latency"),
            ("cpu_us_per_batch", "CPU per batch")]
    print("| batch | variant | " + " | ".join(k[1] for k in keys) + " |")
    print("|---:|:---|" + "---:|" * len(keys))
    for size in sorted({k[1] for k in runs if k[0] == mode}):
        base = {r["repeat"]: r for r in runs.get((mode, size, "thread"), [])}
        for name in order[1:4]:
            rows = runs.get((mode, size, name), [])
            cells = []
            for key, _ in keys:
                ratios = sorted(float(r[key]) / float(base[r["repeat"]][key])
                                for r in rows if r["repeat"] in base and float(base[r["repeat"]][key]))
                if not ratios:
                    cells.append("-")
                    continue
                cells.append(f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})")
            print(f"| {size // 1024} KiB | {name} | " + " | ".join(cells) + " |")
