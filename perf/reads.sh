#!/usr/bin/env bash
# Strict vs lease vs backup reads at --read-fraction 0.9 against a local 3-replica kv
# cluster (perf/reads.md). Each run starts its own cluster; RUNS runs per mode, alternating
# the modes so that a drift in the machine's load hits all alike (MODES to pick others). Writes one JSON per run
# into OUT and prints each run's ops/s, p50 and p99.
#
#   RUNS=3 DURATION=5s perf/reads.sh OUT_DIR
#   SESSIONS=1024 CONNECTIONS=16 MODES="strict lease" perf/reads.sh OUT_DIR   # saturating
#   BIN=DIR perf/reads.sh OUT_DIR   # another build's vsr and vsr-load, nothing built
set -euo pipefail
out=${1:?usage: perf/reads.sh OUT_DIR}
runs=${RUNS:-3}
duration=${DURATION:-5s}
load=()
[[ -n ${SESSIONS:-} ]] && load+=(--sessions "$SESSIONS")
[[ -n ${CONNECTIONS:-} ]] && load+=(--connections "$CONNECTIONS")
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$out"
if [[ -z ${BIN:-} ]]; then
  cargo build --release --workspace
fi
bin=${BIN:-$target/release}
for run in $(seq 1 "$runs"); do
  for mode in ${MODES:-strict lease backup}; do
    json="$out/$mode-$run.json"
    "$bin/vsr-load" --service kv --read-fraction 0.9 --reads "$mode" \
      --duration "$duration" --warmup 1s --quiet --vsr-bin "$bin/vsr" \
      "${load[@]}" --json "$json" > /dev/null
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); l=d["latency_us"]; print(sys.argv[2], sys.argv[3], round(d["ops_per_sec"]), l["p50"], l["p99"], d["errors"])' "$json" "$mode" "$run"
  done
done
