#!/bin/sh
# Call-stack profiles of every process of a local 3-replica cluster under load: the primary
# (replica 0), a backup (replica 1) and the load generator, each recorded with
# `perf record --call-graph dwarf` for the same window of a closed-loop run.
#
# usage: perf/profile.sh BIN_DIR SESSIONS CONNECTIONS PAYLOAD_BYTES OUT_DIR
# BIN_DIR holds release builds of `vsr` and `vsr-load` (the release profile keeps debug
# info, so dwarf unwinding and symbols work). Writes OUT_DIR/{primary,backup,loadgen}.txt
# (the flat and caller-folded reports), OUT_DIR/cpu.txt (each process's CPU time over the
# recording window, from /proc/PID/stat, and per operation) and removes the raw perf.data
# files.
set -eu
BIN=$1; SESSIONS=$2; CONNECTIONS=$3; PAYLOAD=$4; OUT=$5
SECONDS_RECORDED=${SECONDS_RECORDED:-4}   # PERF=0: measure CPU time only
# REPLICA_ARGS: extra arguments for every `vsr replica` (e.g. "--io-threads 1").
mkdir -p "$OUT"
base=$((20000 + $$ % 20000))
CLUSTER=127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))
pids=""
for i in 0 1 2; do
  # shellcheck disable=SC2086 # REPLICA_ARGS is split on purpose (e.g. "--io-threads 1")
  "$BIN/vsr" replica --cluster "$CLUSTER" --replica $i --service null ${REPLICA_ARGS:-} \
    2>"$OUT/replica-$i.log" &
  pids="$pids $!"
done
set -- $pids
PRIMARY=$1; BACKUP=$2; BACKUP2=$3
trap 'kill $pids 2>/dev/null || true' EXIT
"$BIN/vsr-load" --cluster "$CLUSTER" --sessions "$SESSIONS" --connections "$CONNECTIONS" \
  --payload-bytes "$PAYLOAD" --duration $((SECONDS_RECORDED + 4))s --warmup 2s --quiet \
  >"$OUT/load.txt" 2>"$OUT/load.err" &
LOAD=$!
sleep 3   # start-up and warm-up; the recording window lies inside the measured run
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
before="$(cpu_ticks $PRIMARY) $(cpu_ticks $BACKUP) $(cpu_ticks $BACKUP2) $(cpu_ticks $LOAD)"
if [ "${PERF:-1}" = 0 ]; then
  sleep "$SECONDS_RECORDED" & recorders=$!   # CPU accounting alone, no sampling overhead
else for who in primary:$PRIMARY backup:$BACKUP loadgen:$LOAD; do
  name=${who%%:*}; pid=${who#*:}
  perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$OUT/$name.data" \
    -- sleep "$SECONDS_RECORDED" 2>/dev/null &
  recorders="${recorders:-} $!"
done; fi
wait $recorders
after="$(cpu_ticks $PRIMARY) $(cpu_ticks $BACKUP) $(cpu_ticks $BACKUP2) $(cpu_ticks $LOAD)"
wait $LOAD || true
kill $pids 2>/dev/null || true
for name in primary backup loadgen; do
  [ -f "$OUT/$name.data" ] || continue
  perf report -i "$OUT/$name.data" --no-children --percent-limit 0.7 --stdio \
    --sort symbol -g none --no-inline 2>/dev/null | grep -v '^$' | head -60 >"$OUT/$name.txt"
  perf report -i "$OUT/$name.data" --no-children --percent-limit 1 --stdio \
    --no-inline --sort symbol -g caller,0.5,callee,function,percent 2>/dev/null | head -400 >"$OUT/$name.callers.txt"
  rm -f "$OUT/$name.data"
done
cat "$OUT/load.txt"
ops_per_sec=$(awk '$1 == "ops/s" {print $2}' "$OUT/load.txt")
python3 - "$before" "$after" "$SECONDS_RECORDED" "$ops_per_sec" "$(getconf CLK_TCK)" <<'PY' | tee "$OUT/cpu.txt"
import sys
before, after = map(int, sys.argv[1].split()), map(int, sys.argv[2].split())
seconds, ops_per_sec, hz = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"{'process':>10} {'cores':>6} {'us/op':>6}   (CPU over the {seconds:.0f} s window, user+sys, perf's sampling included unless PERF=0)")
total = 0.0
for name, b, a in zip(["primary", "backup", "backup 2", "loadgen"], before, after):
    cores = (a - b) / hz / seconds
    total += cores
    print(f"{name:>10} {cores:6.2f} {cores / ops_per_sec * 1e6:6.2f}")
print(f"{'total':>10} {total:6.2f} {total / ops_per_sec * 1e6:6.2f}   at {ops_per_sec:.0f} ops/s")
PY
