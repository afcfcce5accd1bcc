#!/bin/bash
# The runs of perf/durability.md: a 3-replica cluster in MODE (memory or disk) on
# loopback, driven by vsr-load for 10 s. Build first: cargo build --release -p vsr -p vsr-load
# (with CARGO_TARGET_DIR pointing where B says). SESSIONS and CONNECTIONS override
# the defaults (1024, 16).
# The data directories (up to 3 x 128 MiB per disk run) are removed at the end unless
# KEEP=1; the logs, load.json and stats0.json stay in /tmp/vsr-perf/MODE-RUN.
# usage: perf/durability.sh MODE RUN   (MODE: memory or disk; RUN: a label)
set -u
MODE=$1; RUN=$2
B=${B:-target/release}
A=127.0.0.1:7300,127.0.0.1:7301,127.0.0.1:7302
D=/tmp/vsr-perf/$MODE-$RUN
rm -rf $D; mkdir -p $D
PIDS=()
for i in 0 1 2; do
  EXTRA=""
  if [ $MODE = disk ]; then EXTRA="--durability disk --data-dir $D/data-$i"; fi
  $B/vsr replica --cluster $A --replica $i --service null $EXTRA 2>$D/replica-$i.log &
  PIDS+=($!)
done
sleep 2
$B/vsr-load --cluster $A --cluster-id 0 --sessions ${SESSIONS:-1024} --connections ${CONNECTIONS:-16} --payload-bytes 64 --duration 10s --json $D/load.json --quiet > $D/load.txt 2>&1
$B/vsr stats --address 127.0.0.1:7300 > $D/stats0.json
for p in ${PIDS[@]}; do kill $p; done; wait
python3 -c "import json;d=json.load(open('$D/load.json'));print('$MODE',$RUN,round(d['ops_per_sec']),d['latency_us']['p50'],d['latency_us']['p99'])"
[ "${KEEP:-0}" = 1 ] || rm -rf $D/data-0 $D/data-1 $D/data-2
