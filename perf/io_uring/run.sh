#!/bin/bash
# Builds perf/io_uring (its own workspace, never built by CI) and runs the matrix of
# perf/io_uring.md: the storage thread (A) against io_uring from the loop (B), on a file
# in DIR (default /tmp/uring-bench: ext4 on /dev/vda here, the disk the journal uses).
# Interleaved: each repeat runs every variant back to back for each (mode, batch size),
# in an order that alternates between repeats. Each run is bounded: WARMUP + SECS seconds
# plus growing a 64 MiB file.
# usage: perf/io_uring/run.sh   (REPEATS, SECS, WARMUP, RATE, INFLIGHT, DIR, SIZES, MODES override)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/uring}
REPEATS=${REPEATS:-5}
SECS=${SECS:-2}
WARMUP=${WARMUP:-0.5}
RATE=${RATE:-2000}
INFLIGHT=${INFLIGHT:-64}
DIR=${DIR:-/tmp/uring-bench}
SIZES=${SIZES:-"4096 16384 65536"}
MODES=${MODES:-"closed rate"}

nice cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/uring-bench
OUT=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" "$DIR"

{
  echo "date: $(date -u)"
  echo "kernel: $(uname -r)"
  echo "kernel.io_uring_disabled: $(cat /proc/sys/kernel/io_uring_disabled 2>&1)"
  echo "seccomp: $(grep -E '^Seccomp(_filters)?:' /proc/self/status | tr -s '\t ' ' ' | paste -sd' ')"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-))"
  echo "file system of $DIR: $(df -T "$DIR" | tail -1 | awk '{print $1, $2}')"
  echo "io_uring probe: $("$BIN" --probe)"
  echo "scheduler of vda: $(cat /sys/block/vda/queue/scheduler 2>&1)"
  echo "commit: $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null)"
  echo "rustc: $(rustc --version)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

echo "repeat,$("$BIN" --header)" > "$OUT/runs.csv"
: > "$OUT/uptime.log"

# label -> flags
declare -A FLAGS=(
  [thread]="--variant thread"
  [uring]="--variant uring"
  [uring-d2]="--variant uring --depth 2"
  [uring-ring]="--variant uring --wait ring"
  [inline]="--variant inline"
)
run() { # repeat mode size label
  local repeat=$1 mode=$2 size=$3 label=$4
  echo "$repeat $mode $size $label: $(uptime)" >> "$OUT/uptime.log"
  local line
  line=$(timeout 60 "$BIN" ${FLAGS[$label]} --mode "$mode" --rate "$RATE" --inflight "$INFLIGHT" \
    --batch-bytes "$size" --seconds "$SECS" --warmup "$WARMUP" --path "$DIR/journal")
  echo "$repeat,$line" | tee -a "$OUT/runs.csv"
}

for repeat in $(seq 1 "$REPEATS"); do
  for mode in $MODES; do
    labels="thread uring uring-d2 uring-ring"
    if [ "$mode" = rate ]; then labels="$labels inline"; fi
    if [ $((repeat % 2)) = 0 ]; then labels=$(echo $labels | tr ' ' '\n' | tac | paste -sd' '); fi
    for size in $SIZES; do
      for label in $labels; do run "$repeat" "$mode" "$size" "$label"; done
    done
  done
done
rmdir "$DIR" 2>/dev/null || true
python3 "$HERE/summarize.py" "$OUT/runs.csv" | tee "$OUT/summary.md"
