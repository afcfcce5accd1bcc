#!/usr/bin/env bash
# Replica memory over a long full-load run: starts vsr-load (which starts a local
# 3-replica cluster) and samples every replica's resident set size every 15 s.
#   perf/memory.sh            # 300 s, kv service, 1024 sessions / 16 connections
#   DURATION=60s perf/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-300s}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p vsr -p vsr-load --bins >&2
"$TARGET/release/vsr-load" --service kv --keys 10000 --sessions 1024 --connections 16 \
  --payload-bytes 64 --duration "$DURATION" --quiet > /tmp/vsr-memory-load.txt 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
echo "| seconds | replica 0 RSS MiB | replica 1 RSS MiB | replica 2 RSS MiB |"
echo "|---:|---:|---:|---:|"
started=$(date +%s)
while kill -0 $load 2>/dev/null; do
  sleep 15
  row="| $(( $(date +%s) - started ))"
  for index in 0 1 2; do
    pid=$(pgrep -f "vsr replica .*--replica $index( |$)" | head -1 || true)
    rss=$([ -n "$pid" ] && ps -o rss= -p "$pid" || echo 0)
    row="$row | $(( ${rss:-0} / 1024 ))"
  done
  echo "$row |"
done
echo
grep -E "^(ops/s|p50|p99|errors)" /tmp/vsr-memory-load.txt || cat /tmp/vsr-memory-load.txt
