#!/usr/bin/env bash
# Replica memory against the kv data it holds: starts a local 3-replica cluster of real
# `vsr replica` processes (kv service, memory durability), writes distinct keys with
# `vsr kv` in stages, and after each stage prints every replica's resident set (VmRSS)
# and its peak (VmHWM) next to the bytes of kv data (keys + values).
#   perf/kv_memory.sh                      # stages 0, 1k, 100k, 1M keys
#   STAGES="0 1000 10000" perf/kv_memory.sh
#   REPLICA_ARGS="--checkpoint-interval 8192" perf/kv_memory.sh   # extra `vsr replica` flags
#   DURABILITY=disk perf/kv_memory.sh      # each replica with a data directory of its own
#   VSR=/tmp/vsr-old perf/kv_memory.sh     # another binary (nothing is built)
#   DUMP=/tmp/dump perf/kv_memory.sh       # after the last stage, each replica's smaps,
#                                          # status, threads, log and (with gdb) malloc_stats
# Keys are `k` and 15 digits (16 bytes), values `v` and 61 digits (62 bytes): 78 bytes of
# data a key, the entry size of issue 12's measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGES=${STAGES:-"0 1000 100000 1000000"}
LOADERS=${LOADERS:-4}
REPLICA_ARGS=${REPLICA_ARGS:-}
DURABILITY=${DURABILITY:-memory}
PORT=${PORT:-17400}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${VSR:-}" ]; then
  VSR="$TARGET/release/vsr"
  cargo build --release -p vsr --bins >&2
fi
CLUSTER="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
LOGS=$(mktemp -d /tmp/vsr-kv-memory.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
for index in 0 1 2; do
  durability=(--durability "$DURABILITY")
  [ "$DURABILITY" = memory ] || durability+=(--data-dir "$LOGS/data-$index")
  # shellcheck disable=SC2086 # REPLICA_ARGS is a list of flags
  "$VSR" replica --cluster "$CLUSTER" --replica "$index" --service kv "${durability[@]}" \
    $REPLICA_ARGS 2> "$LOGS/replica-$index.log" &
  pids+=($!)
done
deadline=$((SECONDS + 30))
until "$VSR" admin status --cluster "$CLUSTER" > /dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not start; logs in $LOGS" >&2; exit 1; }
  sleep 0.2
done

# Writes keys (from, to] with LOADERS `vsr kv` clients in parallel; fails unless every
# answer is `ok`.
load() {
  local from=$1 to=$2 loader
  [ "$to" -gt "$from" ] || return 0
  for loader in $(seq 1 "$LOADERS"); do
    seq $((from + loader)) "$LOADERS" "$to" |
      awk '{ printf "put k%015d v%061d\n", $1, $1 }' |
      "$VSR" kv --cluster "$CLUSTER" > "$LOGS/answers-$loader.txt" &
  done
  wait_loaders
  local ok
  ok=$(cat "$LOGS"/answers-*.txt | grep -c '^ok$' || true)
  [ "$ok" -eq $((to - from)) ] || { echo "$ok of $((to - from)) puts ok" >&2; exit 1; }
}
wait_loaders() {
  local job
  for job in $(jobs -p); do
    case " ${pids[*]} " in *" $job "*) ;; *) wait "$job" ;; esac
  done
}
# Waits until every replica has committed what the primary has.
settle() {
  local deadline=$((SECONDS + 60))
  until "$VSR" admin status --cluster "$CLUSTER" --json |
      python3 -c 'import json,sys; r=json.load(sys.stdin); c={x.get("commit") for x in r}; sys.exit(0 if len(c)==1 and None not in c else 1)'; do
    [ $SECONDS -lt $deadline ] || { echo "replicas did not converge" >&2; exit 1; }
    sleep 0.5
  done
  sleep 2
}
kib() { awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"; }

echo "| keys | kv data MiB | RSS r0 / r1 / r2 MiB | peak RSS r0 / r1 / r2 MiB | checkpoint op |"
echo "|---:|---:|---:|---:|---:|"
loaded=0
for keys in $STAGES; do
  load "$loaded" "$keys"
  loaded=$keys
  settle
  rss="" peak=""
  for pid in "${pids[@]}"; do
    rss="$rss / $(( $(kib "$pid" VmRSS) / 1024 ))"
    peak="$peak / $(( $(kib "$pid" VmHWM) / 1024 ))"
  done
  checkpoint=$("$VSR" admin status --cluster "$CLUSTER" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("checkpoint_op"))')
  data=$(awk -v k="$keys" 'BEGIN { printf "%.1f", k * 78 / 1048576 }')
  echo "| $keys | $data | ${rss# / } | ${peak# / } | $checkpoint |"
done
if [ -n "${DUMP:-}" ]; then
  mkdir -p "$DUMP"
  for index in 0 1 2; do
    pid=${pids[$index]}
    cp "/proc/$pid/smaps" "$DUMP/smaps-$index"
    cp "/proc/$pid/smaps_rollup" "$DUMP/smaps_rollup-$index"
    cp "/proc/$pid/status" "$DUMP/status-$index"
    for task in /proc/"$pid"/task/*; do echo "${task##*/} $(cat "$task/comm")"; done > "$DUMP/threads-$index"
    # malloc_stats() prints each glibc arena's bytes to the replica's stderr.
    if command -v gdb > /dev/null; then
      gdb -p "$pid" -batch -ex 'call (void) malloc_stats()' > /dev/null 2>&1 || true
      sleep 0.5
      grep -A3 -E '^(Arena|Total)' "$LOGS/replica-$index.log" > "$DUMP/malloc_stats-$index" || true
    fi
    cp "$LOGS/replica-$index.log" "$DUMP/replica-$index.log"
  done
fi
rm -rf "$LOGS"
