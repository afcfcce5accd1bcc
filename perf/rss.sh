#!/bin/sh
# Replica memory over a long full-load run, sampling only the replicas this run started
# (the children of its own vsr-load, so other clusters on the machine are never counted).
#
# usage: perf/rss.sh BIN_DIR [SECONDS]     (default 300; kv service, 1024 sessions / 16
# connections / 64 B, as perf/memory.sh). Prints a Markdown table, RSS in MiB, every 15 s.
set -eu
BIN=$1; SECONDS_RUN=${2:-300}
OUT=$(mktemp -d)
"$BIN/vsr-load" --service kv --keys 10000 --sessions 1024 --connections 16 \
  --payload-bytes 64 --duration "${SECONDS_RUN}s" --quiet >"$OUT/load.txt" 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true; rm -rf "$OUT"' EXIT
echo "| seconds | replica 0 RSS MiB | replica 1 RSS MiB | replica 2 RSS MiB |"
echo "|---:|---:|---:|---:|"
started=$(date +%s)
while kill -0 $load 2>/dev/null; do
  sleep 15
  row="| $(( $(date +%s) - started ))"
  for index in 0 1 2; do
    pid=$(pgrep -P $load -f -- "--replica $index( |\$)" | head -1 || true)
    rss=$([ -n "$pid" ] && ps -o rss= -p "$pid" || echo 0)
    row="$row | $(( ${rss:-0} / 1024 ))"
  done
  echo "$row |"
done
echo
grep -E "^(ops/s|p50|p99|errors)" "$OUT/load.txt" || cat "$OUT/load.txt"
