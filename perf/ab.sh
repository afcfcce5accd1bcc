#!/bin/sh
# A/B of two builds with `vsr-load --compare`: each run measures vsr and the raw-TCP
# baseline in the same invocation, so the vsr/baseline ratio of a run is comparable across
# builds on a noisy machine. A and B alternate, RUNS pairs per row.
#
# usage: perf/ab.sh A_BIN_DIR B_BIN_DIR OUT_DIR [ROWS...]
# A row is SESSIONS:CONNECTIONS:PAYLOAD_BYTES (default: the issue's three rows).
# Each BIN_DIR holds release builds of `vsr` and `vsr-load` (vsr-load starts the `vsr` next
# to it). Prints per row and build the median vsr ops/s, baseline ops/s, ratio and p50s.
set -eu
A=$1; B=$2; OUT=$3; shift 3
ROWS=${*:-1024:16:64 4096:16:64 1024:16:1024}
RUNS=${RUNS:-3}; DURATION=${DURATION:-5s}; WARMUP=${WARMUP:-1s}
mkdir -p "$OUT"
for row in $ROWS; do
  s=${row%%:*}; rest=${row#*:}; c=${rest%%:*}; p=${rest#*:}
  for i in $(seq 1 "$RUNS"); do
    for side in A B; do
      if [ $side = A ]; then bin=$A; else bin=$B; fi
      "$bin/vsr-load" --compare --sessions "$s" --connections "$c" --payload-bytes "$p" \
        --duration "$DURATION" --warmup "$WARMUP" --quiet \
        --json "$OUT/$side-s$s-c$c-p$p-$i.json" >"$OUT/$side-s$s-c$c-p$p-$i.txt" 2>&1 || true
    done
  done
done
python3 - "$OUT" $ROWS <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
print(f"{'row':>18} {'build':>5} {'runs':>4} {'vsr ops/s':>11} {'base ops/s':>11} {'ratio':>6} {'ratios':>20} {'vsr p50':>8} {'base p50':>8}")
for row in sys.argv[2:]:
    s, c, p = row.split(':')
    for side in 'AB':
        runs = []
        for f in sorted(glob.glob(f"{out}/{side}-s{s}-c{c}-p{p}-*.json")):
            if f.endswith('.baseline.json'): continue
            b = f[:-5] + '.baseline.json'
            if not os.path.exists(b): continue
            v, t = json.load(open(f)), json.load(open(b))
            runs.append((v['ops_per_sec'], t['ops_per_sec'], v['ops_per_sec'] / t['ops_per_sec'], v['latency_us']['p50'], t['latency_us']['p50']))
        if not runs: continue
        med = lambda i: statistics.median(r[i] for r in runs)
        ratios = ' '.join(f"{r[2]:.2f}" for r in runs)
        print(f"{row:>18} {side:>5} {len(runs):>4} {med(0):>11.0f} {med(1):>11.0f} {med(2):>6.2f} {ratios:>20} {med(3):>8.0f} {med(4):>8.0f}")
PY
