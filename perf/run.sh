#!/usr/bin/env bash
# Reproduces the table in perf/README.md: vsr against the raw-TCP baseline (same
# payloads, sessions and connections, one run each, in the same invocation) at 64 B and
# 1 KiB for (sessions, connections) = (1,1), (64,4), (1024,16), (4096,16).
#
#   perf/run.sh                      # 10 s per measurement after a 2 s warmup
#   DURATION=3s WARMUP=1s perf/run.sh
#
# Everything runs on 127.0.0.1. Raw outputs (tables, JSON, hgrm) go to perf/results/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SERVICE=${SERVICE:-null}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -p vsr -p vsr-load --bins >&2
BIN="$TARGET/release/vsr-load"
OUT="perf/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

{
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "kernel: $(uname -r)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these 2 cores)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Hypervisor)'
  echo "command: $BIN --compare --service $SERVICE --duration $DURATION --warmup $WARMUP --sessions S --connections C --payload-bytes P"
} | tee "$OUT/machine.txt" >&2

echo "| payload B | sessions | connections | vsr ops/s | baseline ops/s | vsr/baseline | vsr p50 / p99 us | baseline p50 / p99 us | vsr errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for payload in 64 1024; do
  for sc in "1 1" "64 4" "1024 16" "4096 16"; do
    set -- $sc
    sessions=$1 connections=$2
    name="p${payload}-s${sessions}-c${connections}"
    # Up to 3 attempts: a fresh local cluster occasionally fails to start (see README).
    ok=""
    for attempt in 1 2 3; do
      if "$BIN" --compare --quiet --service "$SERVICE" --duration "$DURATION" --warmup "$WARMUP" \
          --sessions "$sessions" --connections "$connections" --payload-bytes "$payload" \
          --startup-timeout 15s --json "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" \
          >"$OUT/$name.txt" 2>"$OUT/$name.stderr.$attempt"; then
        ok=1
        break
      fi
    done
    if [ -z "$ok" ]; then
      echo "| $payload | $sessions | $connections | failed 3 times: see $OUT/$name.stderr.* | | | | | |"
      continue
    fi
    [ "$attempt" = 1 ] || echo "$name: needed $attempt attempts" >&2
    awk -v p="$payload" -v s="$sessions" -v c="$connections" '
      $1 == "ops/s" { vo = $2; bo = $3; ratio = $4 }
      $1 == "p50"   { v50 = $3; b50 = $4 }
      $1 == "p99"   { v99 = $3; b99 = $4 }
      $1 == "errors" { ve = $2 }
      END { printf "| %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n", p, s, c, vo, bo, ratio, v50, v99, b50, b99, ve }
    ' "$OUT/$name.txt"
  done
done | tee "$OUT/table.md"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
echo "raw results in $OUT" >&2
