#!/usr/bin/env bash
# What a checkpoint of a large kv state does to the event loops (issue 12,
# perf/checkpoint_build.md): a local 3-replica kv cluster in memory with the default
# limits (a checkpoint every 65,536 ops), filled by vsr-load with random puts over KEYS
# keys of VALUE bytes for FILL_SECONDS, which touch every bucket between checkpoints.
# Prints the load's throughput and, per replica, the longest event-loop iteration, the
# checkpoints taken, skipped and waited for, the view changes, the RSS, and the loop
# thread's time on a core and waiting for one (`loop_cpu_ms`, `loop_runqueue_wait_ms`).
#
#   perf/checkpoint_stall.sh                       # KEYS=1000000 VALUE=1024 FILL_SECONDS=60
#   B=/path/to/other/target/release perf/checkpoint_stall.sh   # another build, same run
#   DISK=1 perf/checkpoint_stall.sh                # --durability disk, data under the run's
#                                                  # directory (removed at the end); prints the
#                                                  # bytes written by kind (journal appends,
#                                                  # compactions, checkpoint files)
#   HOT_KEYS=20000 HOT_SECONDS=30 perf/checkpoint_stall.sh   # then puts over a hot set
#   DISK=1 RESTART=1 perf/checkpoint_stall.sh      # then kill -9 and restart replica 2
#                                                  # (WARM=1: its files read once first)
#   EXTRA="--checkpoint-interval 8192" perf/checkpoint_stall.sh   # more replica options
# Build first: cargo build --release -p vsr -p vsr-load
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-1024}
FILL_SECONDS=${FILL_SECONDS:-60}
PORT=${PORT:-17600}
B=${B:-target/release}
L=${L:-target/release} # the load generator (the same for every build compared)
CLUSTER="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
D=$(mktemp -d /tmp/vsr-checkpoint-stall.XXXXXX)
declare -a PIDS=(0 0 0)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A replica on disk may take seconds to exit (it finishes the checkpoint file it is
  # writing): the next run must not find its ports taken.
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  # KEEP_DATA=1: the data directories stay (to inspect or profile a restart).
  if [ "${KEEP_DATA:-0}" != 1 ]; then rm -rf "$D"/data-*; fi
}
trap cleanup EXIT

# start REPLICA: runs replica REPLICA in the background, its log appended to.
start() {
  DURABILITY=()
  if [ "${DISK:-0}" = 1 ]; then DURABILITY=(--durability disk --data-dir "$D/data-$1"); fi
  "$B/vsr" replica --cluster "$CLUSTER" --replica "$1" --service kv ${EXTRA:-} "${DURABILITY[@]}" 2>> "$D/replica-$1.log" &
  PIDS[$1]=$!
}
for i in 0 1 2; do start "$i"; done
deadline=$((SECONDS + 30))
until "$B/vsr" admin status --cluster "$CLUSTER" > /dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not start; logs in $D" >&2; exit 1; }
  sleep 0.2
done
# load NAME KEYS SECONDS [ORDER]: random (or ORDER) puts over the first KEYS keys.
load() {
  "$L/vsr-load" --cluster "$CLUSTER" --cluster-id 0 --service kv --keys "$2" \
    --key-order "${4:-random}" --payload-bytes "$VALUE" --sessions 256 --connections 8 \
    --warmup 0s --duration "${3}s" --json "$D/$1.json" --quiet > /dev/null || true
  python3 - "$D/$1.json" "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    lat = d.get("latency_us", {})
    print(f"{sys.argv[2]}: {d['ops_per_sec']:.0f} puts/s, {d.get('ops', d.get('completed', '?'))} ops,"
          f" latency p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} us")
except Exception as e:
    print(f"{sys.argv[2]}: no result ({e})")
PY
}
# report PHASE: per replica, the loop's and checkpoints' counters, the RSS, and (disk)
# the bytes the data directory wrote by kind since the start.
report() {
  for i in 0 1 2; do
    "$B/vsr" stats --address "127.0.0.1:$((PORT + i))" > "$D/stats-$1-$i.json" 2>/dev/null || echo '{}' > "$D/stats-$1-$i.json"
    rss=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[$i]}/status" 2>/dev/null || echo -1)
    python3 - "$D/stats-$1-$i.json" "$i" "$rss" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d.get("counters", {}); r = d.get("runtime", {})
loop = d.get("histograms", {}).get("loop_iteration_us", {})
commit = d.get("histograms", {}).get("request_commit_us", {})
print(f"replica {sys.argv[2]}: commit {d.get('commit')} checkpoint {d.get('checkpoint_op')}"
      f"  loop iteration max {loop.get('max', -1) / 1000:.1f} ms p99 {loop.get('p99', -1)} us"
      f"  checkpoints {c.get('checkpoints')} skipped {c.get('checkpoints_skipped', '-')}"
      f" waited {c.get('checkpoint_build_waits', '-')} held {c.get('checkpoint_build_holds', '-')}"
      f"  view changes {c.get('view_changes')}"
      f"  request to commit p99 {commit.get('p99', '-')} max {commit.get('max', '-')} us"
      f"  RSS {int(sys.argv[3]) // 1024} MB")
if "loop_runqueue_wait_ms" in r:
    print(f"  loop thread: on a core {r.get('loop_cpu_ms', 0) / 1000:.1f} s,"
          f" ready but waiting for a core {r['loop_runqueue_wait_ms'] / 1000:.1f} s")
if "storage_journal_append_bytes" in r:
    mb = lambda k: r.get(k, 0) / 1e6
    print(f"  disk: journal appends {mb('storage_journal_append_bytes'):.0f} MB,"
          f" compactions {mb('storage_journal_compaction_bytes'):.0f} MB"
          f" ({r.get('storage_journal_compactions')}), zeros {mb('storage_journal_zero_bytes'):.0f} MB,"
          f" checkpoint files {mb('storage_checkpoint_file_bytes'):.0f} MB"
          f" (full {r.get('storage_checkpoint_files_full')},"
          f" incremental {r.get('storage_checkpoint_files_incremental', 0)},"
          f" pages shared {r.get('storage_checkpoint_pages_shared', 0)})")
PY
  done
}
load fill "$KEYS" "$FILL_SECONDS"
report fill
# HOT_KEYS=N HOT_SECONDS=S: then S seconds of puts over the first N keys only (a hot
# set: each checkpoint changes the pages of at most N records).
if [ -n "${HOT_KEYS:-}" ]; then
  load hot "$HOT_KEYS" "${HOT_SECONDS:-30}"
  report hot
fi
# RESTART=1 (with DISK=1): then kill -9 replica 2 and restart it on its data directory;
# prints how long it took to read its directory back (checkpoint files included) and to
# be normal again (waiting at most 300 s).
if [ "${RESTART:-0}" = 1 ]; then
  kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
  files=$(ls "$D/data-2" | grep -c '^checkpoint-[0-9]*$' || true)
  bytes=$(cat "$D"/data-2/checkpoint-* 2>/dev/null | wc -c)
  # WARM=1: read the checkpoint files once first (are they in the page cache?).
  if [ "${WARM:-0}" = 1 ]; then
    warm_started=$(date +%s.%N)
    cat "$D"/data-2/checkpoint-* "$D"/data-2/journal > /dev/null
    echo "warm read of the files: $(python3 -c "print(f'{$(date +%s.%N) - $warm_started:.1f}')") s"
  fi
  opened_before=$(grep -c "data directory opened" "$D/replica-2.log" || true)
  started=$(date +%s.%N)
  start 2
  opened="" normal=""
  until [ -n "$normal" ]; do
    now=$(date +%s.%N)
    if [ -z "$opened" ] && [ "$(grep -c "data directory opened" "$D/replica-2.log" || true)" -gt "$opened_before" ]; then
      opened=$(python3 -c "print(f'{$now - $started:.1f}')")
    fi
    if [ -n "$opened" ] && "$B/vsr" stats --address "127.0.0.1:$((PORT + 2))" 2>/dev/null \
      | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin).get("status") != "normal")' 2>/dev/null; then
      normal=$(python3 -c "print(f'{$now - $started:.1f}')")
    fi
    python3 -c "import sys; sys.exit(0 if $now - $started < 300 else 1)" || { echo "restart: not normal after 300 s"; break; }
    sleep 0.1
  done
  echo "restart of replica 2 ($files checkpoint files, $((bytes / 1000000)) MB): directory read back in ${opened:-?} s, normal in ${normal:-?} s"
  grep "data directory opened" "$D/replica-2.log" | tail -1
fi
echo "logs and stats in $D"
