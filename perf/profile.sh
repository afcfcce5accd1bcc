#!/bin/sh
# Call-stack profiles of every process of a local 3-replica cluster under load: the primary
# (replica 0), a backup (replica 1) and the load generator, each recorded with
# `perf record --call-graph dwarf` for the same window of a closed-loop run.
#
# usage: perf/profile.sh BIN_DIR SESSIONS CONNECTIONS PAYLOAD_BYTES OUT_DIR
# BIN_DIR holds release builds of `vsr` and `vsr-load` (the release profile keeps debug
# info, so dwarf unwinding and symbols work). Writes OUT_DIR/{primary,backup,loadgen}.txt
# (the flat and caller-folded reports) and removes the raw perf.data files.
set -eu
BIN=$1; SESSIONS=$2; CONNECTIONS=$3; PAYLOAD=$4; OUT=$5
SECONDS_RECORDED=${SECONDS_RECORDED:-4}
mkdir -p "$OUT"
base=$((20000 + $$ % 20000))
CLUSTER=127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))
pids=""
for i in 0 1 2; do
  "$BIN/vsr" replica --cluster "$CLUSTER" --replica $i --service null 2>"$OUT/replica-$i.log" &
  pids="$pids $!"
done
set -- $pids
PRIMARY=$1; BACKUP=$2
trap 'kill $pids 2>/dev/null || true' EXIT
"$BIN/vsr-load" --cluster "$CLUSTER" --sessions "$SESSIONS" --connections "$CONNECTIONS" \
  --payload-bytes "$PAYLOAD" --duration $((SECONDS_RECORDED + 4))s --warmup 2s --quiet \
  >"$OUT/load.txt" 2>"$OUT/load.err" &
LOAD=$!
sleep 3   # start-up and warm-up; the recording window lies inside the measured run
for who in primary:$PRIMARY backup:$BACKUP loadgen:$LOAD; do
  name=${who%%:*}; pid=${who#*:}
  perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$OUT/$name.data" \
    -- sleep "$SECONDS_RECORDED" 2>/dev/null &
  recorders="${recorders:-} $!"
done
wait $LOAD || true
wait $recorders
kill $pids 2>/dev/null || true
for name in primary backup loadgen; do
  perf report -i "$OUT/$name.data" --no-children --percent-limit 0.7 --stdio \
    --sort symbol -g none --no-inline 2>/dev/null | grep -v '^$' | head -60 >"$OUT/$name.txt"
  perf report -i "$OUT/$name.data" --no-children --percent-limit 2 --stdio \
    --no-inline --sort symbol -g caller,0.5,callee,function,percent 2>/dev/null | head -400 >"$OUT/$name.callers.txt"
  rm -f "$OUT/$name.data"
done
cat "$OUT/load.txt"
