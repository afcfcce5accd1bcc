#!/usr/bin/env bash
# CPU per operation of each process of a local 3-replica kv cluster serving reads
# (perf/reads.md), and optionally a call-stack profile of the primary: the kv workload at
# --read-fraction 0.9 in one read mode, the cluster started by vsr-load itself.
#
#   BIN=DIR MODE=lease|strict SESSIONS=1024 CONNECTIONS=16 perf/profile_reads.sh OUT_DIR
#
# BIN holds release builds of `vsr` and `vsr-load`. Writes OUT_DIR/run.json (vsr-load's
# report), OUT_DIR/cpu.txt (each process's CPU over the window, % of a core and us per op
# at the run's ops/s) and, with PERF=1, OUT_DIR/primary.txt and primary.callers.txt.
# WINDOW: seconds measured (default 3), inside a run of WINDOW+10 s after a 1 s warm-up.
set -euo pipefail
out=${1:?usage: perf/profile_reads.sh OUT_DIR}
bin=${BIN:?BIN=DIR of vsr and vsr-load}
mode=${MODE:-lease}
window=${WINDOW:-3}
mkdir -p "$out"
"$bin/vsr-load" --service kv --read-fraction 0.9 --reads "$mode" \
  --sessions "${SESSIONS:-1024}" --connections "${CONNECTIONS:-16}" \
  --duration $((window + 10))s --warmup 1s --quiet --vsr-bin "$bin/vsr" \
  --json "$out/run.json" >"$out/load.txt" 2>"$out/load.err" &
load=$!
sleep 3.5 # cluster start-up and warm-up; the window lies inside the measured run
primary= backups=()
for child in $(pgrep -P "$load"); do
  args=$(tr '\0' ' ' <"/proc/$child/cmdline")
  case "$args" in
  *"--replica 0 "*) primary=$child ;;
  *" replica "*) backups+=("$child") ;;
  esac
done
[[ -n $primary && ${#backups[@]} -eq 2 ]] || { echo "replicas not found" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# write(2)/writev(2) calls and bytes, read(2) calls (/proc/PID/io; the primary's only:
# the load generator's threads do not show there)
io() { awk '/^syscw/ {w=$2} /^wchar/ {b=$2} /^syscr/ {r=$2} END {print w "," b "," r}' "/proc/$1/io"; }
procs=("$primary" "${backups[@]}" "$load")
before=() after=()
for p in "${procs[@]}"; do before+=("$(ticks "$p")"); done
io_before=("$(io "$primary")")
if [[ ${PERF:-0} == 1 ]]; then
  perf record -F 999 -g -p "$primary" -o "$out/primary.data" -- sleep "$window" 2>/dev/null &
  recorder=$!
fi
sleep "$window" # the CPU window, apart from perf's own start-up and write-out
for p in "${procs[@]}"; do after+=("$(ticks "$p")"); done
io_after=("$(io "$primary")")
[[ -n ${recorder:-} ]] && wait "$recorder"
wait "$load"
if [[ -f $out/primary.data ]]; then
  perf report -i "$out/primary.data" --no-children --percent-limit 0.5 --stdio \
    --sort symbol -g none --no-inline 2>/dev/null | grep -v '^$' | head -80 >"$out/primary.txt"
  perf report -i "$out/primary.data" --children --percent-limit 2 --stdio \
    --sort symbol -g none --no-inline 2>/dev/null | grep -v '^$' | head -80 >"$out/primary.children.txt"
  perf report -i "$out/primary.data" --no-children --stdio --sort dso -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -8 >"$out/primary.dso.txt"
  rm -f "$out/primary.data"
fi
python3 - "${before[*]}" "${after[*]}" "$window" "$(getconf CLK_TCK)" "$out/run.json" "${io_before[*]}" "${io_after[*]}" <<'PY' | tee "$out/cpu.txt"
import json, sys
before, after = map(int, sys.argv[1].split()), map(int, sys.argv[2].split())
window, hz, run = float(sys.argv[3]), float(sys.argv[4]), json.load(open(sys.argv[5]))
ops = run["ops_per_sec"]
cells, total = [], 0.0
for name, b, a in zip(["primary", "backup1", "backup2", "loadgen"], before, after):
    cores = (a - b) / hz / window
    total += cores
    cells.append(f"{name} {100 * cores:.0f}% {cores / ops * 1e6:.3f}us")
lat = run["latency_us"]
for name, b, a in zip(["primary"], sys.argv[6].split(), sys.argv[7].split()):
    (wb, bb, rb), (wa, ba, ra) = (map(int, b.split(",")), map(int, a.split(",")))
    n = ops * window
    cells.append(f"{name} writes/kop {1000 * (wa - wb) / n:.1f} B/op {(ba - bb) / n:.0f} reads/kop {1000 * (ra - rb) / n:.1f}")
print(f"ops/s {ops:.0f} p50 {lat['p50']} p99 {lat['p99']} errors {run['errors']} | "
      + " | ".join(cells) + f" | total {total / ops * 1e6:.3f} us/op")
PY
