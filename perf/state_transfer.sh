#!/usr/bin/env bash
# Checkpoint transfer between real replica processes (issue 12, perf/state_transfer.md).
#
# A local 3-replica kv cluster on loopback, on disk (`--durability disk`), filled by
# vsr-load with puts over KEYS keys of VALUE bytes, in key order (FILL_ORDER=sequential,
# the default: a fill long enough writes every key once, so KEYS x VALUE is the state's
# size) or at random (FILL_ORDER=random). Then, on backup 2:
#   full:    kill -9, its data directory wiped, restarted: it recovers (paper 4.3) with a
#            full checkpoint transfer. Timed to caught up; the rate against a plain
#            loopback socket copy of the same bytes (python, one connection).
#            vsr-load runs against the cluster meanwhile, and once more without a
#            transfer, for the normal case's throughput during a transfer.
#   diff:    kill -9, DIFF_SECONDS more puts (a few % of the keys), restarted on its
#            data directory: it fetches only the pages that differ from its own
#            checkpoint. vsr-load repeats its fill's keys with the same payload, which
#            changes nothing; DIFF_PUTS=N puts N new values with `vsr kv` instead.
#   resume:  kill -9, directory wiped, restarted; killed again once it holds half the
#            pages of its full transfer, and restarted: the second attempt takes the
#            pages the first kept on disk (the data directory's `fetch` file) and
#            fetches only the others.
# Or, with RATE=N, the transfer rate alone, in memory (no `--durability disk`, no load
# during the transfers): after the fill, N full transfers of an empty replica 2 (killed,
# restarted: it recovers), each timed from its log and followed by the raw loopback
# copy of the same bytes, so both are measured under the same load of the machine;
# prints each pair and the CPU time the replicas spent (a measure the machine's other
# load disturbs less than the rate), then the medians and their ratio. PROFILE=1 records each transfer
# with `perf record -a -g` (the whole machine; the pids are printed).
# Prints one line of results per scenario and each replica's counters.
#
#   perf/state_transfer.sh                          # KEYS=1000000 VALUE=1024 (1 GiB)
#   KEYS=65536 FILL_SECONDS=10 perf/state_transfer.sh   # a 64 MiB version
#   RATE=3 KEYS=200000 FILL_SECONDS=15 CHECKPOINT=16384 LOG_TAIL=1024 perf/state_transfer.sh
#   SERVE_BYTES_PER_TICK=262144 ...  # every replica serves at most this per 10 ms tick
#                                    # (throttles every transfer, the full one included:
#                                    # a small state's transfer then lasts long enough
#                                    # for the resume scenario to catch it partway)
# Build first: cargo build --release -p vsr -p vsr-load
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-1024}
FILL_SECONDS=${FILL_SECONDS:-60}
FILL_ORDER=${FILL_ORDER:-sequential}
DIFF_SECONDS=${DIFF_SECONDS:-1}
DIFF_PUTS=${DIFF_PUTS:-}
CHECKPOINT=${CHECKPOINT:-65536}
LOG_TAIL=${LOG_TAIL:-4096}
SERVE_BYTES_PER_TICK=${SERVE_BYTES_PER_TICK:-}
RATE=${RATE:-}
PROFILE=${PROFILE:-}
PORT=${PORT:-17500}
B=${B:-target/release}
CLUSTER="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
D=$(mktemp -d /tmp/vsr-state-transfer.XXXXXX)
declare -a PIDS=(0 0 0)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start() {
  local i=$1
  local -a DURABILITY=(--durability disk --data-dir "$D/data-$i")
  [ -z "$RATE" ] || DURABILITY=(--durability memory)
  "$B/vsr" replica --cluster "$CLUSTER" --replica "$i" --service kv \
    --checkpoint-interval "$CHECKPOINT" --log-tail "$LOG_TAIL" \
    ${SERVE_BYTES_PER_TICK:+--checkpoint-serve-bytes-per-tick "$SERVE_BYTES_PER_TICK"} \
    "${DURABILITY[@]}" 2>> "$D/replica-$i.log" &
  PIDS[$i]=$!
}
stat() { # stat REPLICA FIELD: a top-level or counters field of its stats
  "$B/vsr" stats --address "127.0.0.1:$((PORT + $1))" 2>/dev/null |
    python3 -c "import json,sys;d=json.load(sys.stdin);f='$2';print(d.get(f, d['counters'].get(f)))" 2>/dev/null ||
    echo -1
}
load() { # load SECONDS JSON [KEY_ORDER]
  "$B/vsr-load" --cluster "$CLUSTER" --cluster-id 0 --service kv --keys "$KEYS" \
    --key-order "${3:-random}" \
    --payload-bytes "$VALUE" --sessions 256 --connections 8 --warmup 0s \
    --duration "${1}s" --json "$2" --quiet > /dev/null
}
half_fetched() { # whether replica 2 holds half the pages of a transfer under way (one reading)
  "$B/vsr" stats --address "127.0.0.1:$((PORT + 2))" 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin); c = lambda f: d.get(f, d['counters'].get(f))
sys.exit(0 if c('checkpoint_fetch_pages') > 0 and 2 * c('checkpoint_fetch_pages_held') >= c('checkpoint_fetch_pages') else 1)" 2>/dev/null
}
# diff_puts N: N puts of a value vsr-load never writes, to random keys of vsr-load's
# naming, through 4 `vsr kv` clients; fails unless every answer is `ok`. (vsr-load puts
# one fixed payload from a fixed seed, so its keys in the same order: a second run
# rewrites what the fill wrote with the same bytes and changes no page.)
diff_puts() {
  local n=$1 loader
  local -a loaders=()
  for loader in 1 2 3 4; do
    awk -v n=$((n / 4)) -v keys="$KEYS" -v bytes="$VALUE" -v seed="$loader" 'BEGIN {
      srand(seed); v = ""; while (length(v) < bytes) v = v "0123456789"
      for (i = 0; i < n; i++) printf "put key-%010d %s\n", int(rand() * keys), substr(v, 1, bytes) }' |
      "$B/vsr" kv --cluster "$CLUSTER" > "$D/diff-$loader.txt" &
    loaders+=($!)
  done
  for loader in "${loaders[@]}"; do wait "$loader"; done
  local ok; ok=$(cat "$D"/diff-*.txt | grep -c '^ok$' || true)
  [ "$ok" -eq $((n / 4 * 4)) ] || { echo "diff: $ok of $((n / 4 * 4)) puts ok; logs in $D" >&2; exit 1; }
}
ops_per_sec() { python3 -c "import json;print(round(json.load(open('$1'))['ops_per_sec']))"; }
now() { date +%s.%N; }
# Waits until replica 2 is normal with a commit number at least the primary's now.
caught_up() {
  local target; target=$(stat 0 commit)
  local deadline=$((SECONDS + 600))
  until [ "$(stat 2 status)" = normal ] && [ "$(stat 2 commit)" -ge "$target" ]; do
    [ $SECONDS -lt $deadline ] || { echo "replica 2 did not catch up; logs in $D" >&2; exit 1; }
    sleep 0.05
  done
}
counters() {
  for i in 0 1 2; do
    echo "  replica $i: fetched $(stat $i checkpoint_bytes_fetched) B ($(stat $i checkpoint_pages_fetched) pages)" \
      "reused $(stat $i checkpoint_pages_reused) pages, asked again $(stat $i checkpoint_pages_refetched)," \
      "served $(stat $i checkpoint_bytes_served) B; loop iteration max $(python3 -c "import json,subprocess;d=json.loads(subprocess.check_output(['$B/vsr','stats','--address','127.0.0.1:$((PORT + i))']));print(d['histograms']['loop_iteration_us']['max'])") us"
  done
}

cpu_ms() { # cpu_ms PID: the process's user + system CPU time so far, milliseconds
  python3 -c "import os;f=open('/proc/$1/stat').read().rsplit(')',1)[1].split();print((int(f[11])+int(f[12]))*1000//os.sysconf('SC_CLK_TCK'))"
}
raw_copy() { # raw_copy BYTES: MB/s of a plain loopback socket copy of BYTES (one connection)
  python3 - "$1" <<'EOF'
import socket, sys, threading, time
total = int(sys.argv[1]); chunk = b"x" * (1 << 20)
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
def drain():
    conn, _ = server.accept(); left = total
    while left > 0:
        data = conn.recv(1 << 20)
        if not data: break
        left -= len(data)
thread = threading.Thread(target=drain); thread.start()
client = socket.create_connection(server.getsockname()); start = time.time(); sent = 0
while sent < total:
    n = min(len(chunk), total - sent); client.sendall(chunk[:n]); sent += n
thread.join(); print(total / (time.time() - start) / 1e6)
EOF
}
# first_fetch LOG: the first transfer in the replica's log, as "SECONDS BYTES": from its
# first 'fetching a checkpoint' to the 'fetched a checkpoint' that ends it (recovery's
# own round trips and the log suffix excluded), and the bytes that line counts. Only the
# first: when the sources moved on during the install, a second, small transfer of the
# newer checkpoint follows, and timing from its start (as this script did before) put
# all the bytes in its fraction of a second.
first_fetch() {
  python3 - "$1" <<'EOF'
import re, sys, datetime
start = None
parse = lambda s: datetime.datetime.fromisoformat(s.rstrip("Z")[:26])
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    stamp = line.split(" ", 1)[0]
    if start is None and "fetching a checkpoint" in line and "held=" not in line:
        start = stamp
    if start is not None and "fetched a checkpoint" in line:
        fetched = re.search(r"fetched_bytes=(\d+)", line).group(1)
        print((parse(stamp) - parse(start)).total_seconds(), fetched)
        sys.exit(0)
print(-1, 0)
EOF
}

# install_secs LOG: seconds from the replica's first 'fetched a checkpoint' line (every
# page in hand) to its first 'installed a checkpoint received by state transfer'.
install_secs() {
  python3 - "$1" <<'EOF'
import re, sys, datetime
parse = lambda s: datetime.datetime.fromisoformat(s.rstrip("Z")[:26])
fetched = installed = None
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    stamp = line.split(" ", 1)[0]
    if fetched is None and "fetched a checkpoint" in line:
        fetched = stamp
    if installed is None and "installed a checkpoint received by state transfer" in line:
        installed = stamp
print(round((parse(installed) - parse(fetched)).total_seconds(), 3) if fetched and installed else -1)
EOF
}

for i in 0 1 2; do start "$i"; done
deadline=$((SECONDS + 30))
until "$B/vsr" admin status --cluster "$CLUSTER" > /dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not start; logs in $D" >&2; exit 1; }
  sleep 0.2
done
echo "fill: ${FILL_SECONDS}s of puts over $KEYS keys of $VALUE bytes, in $FILL_ORDER order"
load "$FILL_SECONDS" "$D/fill.json" "$FILL_ORDER"
fill_puts=$(python3 -c "import json;print(json.load(open('$D/fill.json'))['ops'])")
echo "  $(ops_per_sec "$D/fill.json") puts/s, $fill_puts puts; checkpoint at op $(stat 0 checkpoint_op)"
if [ "$FILL_ORDER" = sequential ] && [ "$fill_puts" -lt "$KEYS" ]; then
  echo "  (the fill wrote $fill_puts of the $KEYS keys: a larger FILL_SECONDS writes them all)"
fi

if [ -n "$RATE" ]; then
  rates=(); raws=()
  for n in $(seq 1 "$RATE"); do
    kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
    before=$(stat 0 checkpoint_bytes_served); before1=$(stat 1 checkpoint_bytes_served)
    cpu0=$(cpu_ms "${PIDS[0]}"); cpu1=$(cpu_ms "${PIDS[1]}")
    mv "$D/replica-2.log" "$D/replica-2.$n.before.log"
    if [ -n "$PROFILE" ]; then
      perf record -a -g -F 1999 -o "$D/perf.$n.data" 2> /dev/null > /dev/null &
      profiler=$!; sleep 0.5
    fi
    start 2
    # Watched in its log, not with `vsr stats` (a process per reading, which took a
    # few % of the machine while the transfer ran).
    deadline=$((SECONDS + 600))
    until grep -q "fetched a checkpoint" "$D/replica-2.log"; do
      [ $SECONDS -lt $deadline ] || { echo "replica 2 fetched nothing; logs in $D" >&2; exit 1; }
      sleep 0.05
    done
    cpu_sources=$(( $(cpu_ms "${PIDS[0]}") - cpu0 + $(cpu_ms "${PIDS[1]}") - cpu1 ))
    if [ -n "$PROFILE" ]; then
      kill -INT "$profiler"; wait "$profiler" 2>/dev/null || true
      echo "  profile: $D/perf.$n.data (whole machine; sources: pids ${PIDS[0]}, ${PIDS[1]}; receiver: ${PIDS[2]})"
    fi
    caught_up
    cpu_receiver=$(cpu_ms "${PIDS[2]}")
    read -r secs bytes < <(first_fetch "$D/replica-2.log")
    rate=$(python3 -c "print(round($bytes/max($secs,1e-9)/1e6,1))")
    raw=$(python3 -c "print(round($(raw_copy "$bytes"),1))")
    echo "transfer $n: $bytes bytes in ${secs}s: $rate MB/s (served $(( $(stat 0 checkpoint_bytes_served) - before )) and" \
      "$(( $(stat 1 checkpoint_bytes_served) - before1 ))); raw loopback copy $raw MB/s; transfer/raw" \
      "$(python3 -c "print(round($rate/$raw,3))")"
    echo "  cpu: sources ${cpu_sources} ms to fetched; receiver ${cpu_receiver} ms from start to caught up (restore included)"
    longest=$("$B/vsr" stats --address "127.0.0.1:$((PORT + 2))" |
      python3 -c "import json,sys;print(json.load(sys.stdin)['histograms']['loop_iteration_us']['max'])")
    echo "  receiver: longest loop iteration ${longest} us (since its restart); install, fetched to installed: $(install_secs "$D/replica-2.log") s"
    rates+=("$rate"); raws+=("$raw")
  done
  python3 - "${rates[*]}" "${raws[*]}" <<'EOF'
import statistics, sys
rates = [float(x) for x in sys.argv[1].split()]; raws = [float(x) for x in sys.argv[2].split()]
print(f"median: transfer {statistics.median(rates):.1f} MB/s, raw {statistics.median(raws):.1f} MB/s,"
      f" transfer/raw {statistics.median(rates) / statistics.median(raws):.3f}"
      f" (per transfer: {', '.join(f'{r / w:.3f}' for r, w in zip(rates, raws))})")
EOF
  echo "logs in $D"
  exit 0
fi

# full: an empty replica 2.
echo "baseline: 10s of load without a transfer"
load 10 "$D/baseline.json"
kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
rm -rf "$D/data-2"
before=$(stat 0 checkpoint_bytes_served); before1=$(stat 1 checkpoint_bytes_served)
t0=$(now); start 2
load 10 "$D/during.json" &
loader=$!
caught_up
t1=$(now)
wait $loader
all_bytes=$(stat 2 checkpoint_bytes_fetched)
served=$(( $(stat 0 checkpoint_bytes_served) - before + $(stat 1 checkpoint_bytes_served) - before1 ))
secs=$(python3 -c "print($t1 - $t0)")
read -r fetch_secs bytes < <(first_fetch "$D/replica-2.log")
raw=$(raw_copy "$bytes")
echo "full: $bytes bytes fetched in the first transfer ($all_bytes in all, $served served); it took ${fetch_secs}s:" \
  "$(python3 -c "print(round($bytes/max($fetch_secs,1e-9)/1e6,1))") MB/s; ${secs}s from restart to caught up;" \
  "raw loopback copy $(python3 -c "print(round($raw,1))") MB/s; transfer/raw $(python3 -c "print(round($bytes/max($fetch_secs,1e-9)/1e6/$raw,3))")"
echo "  load during the transfer $(ops_per_sec "$D/during.json") ops/s against $(ops_per_sec "$D/baseline.json") without:" \
  "$(python3 -c "print(round($(ops_per_sec "$D/during.json")/$(ops_per_sec "$D/baseline.json"),2))")x"
full_bytes=$bytes

# diff: replica 2 misses a few % of the keys' puts, then restarts on its own disk.
kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
if [ -n "$DIFF_PUTS" ]; then
  diff_puts "$DIFF_PUTS"
  puts=$DIFF_PUTS
else
  load "$DIFF_SECONDS" "$D/diff.json"
  puts=$(python3 -c "import json;print(json.load(open('$D/diff.json'))['ops'])")
fi
start 2; caught_up
bytes=$(stat 2 checkpoint_bytes_fetched)
echo "diff: $puts puts missed ($(python3 -c "print(round(100*$puts/$KEYS,2))")% of the keys); fetched $bytes bytes =" \
  "$(python3 -c "print(round(100*$bytes/$full_bytes,2))")% of a full transfer; reused $(stat 2 checkpoint_pages_reused) pages"

# resume: an empty replica killed half-way through its full transfer, restarted on its
# directory: the pages it fetched were kept there (`fetch`), so the second attempt
# fetches only the others.
kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
rm -rf "$D/data-2"
start 2
deadline=$((SECONDS + 120))
until half_fetched; do
  [ $SECONDS -lt $deadline ] || break
  sleep 0.01
done
first=$(stat 2 checkpoint_bytes_fetched)
kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
start 2; caught_up
second=$(stat 2 checkpoint_bytes_fetched)
echo "resume: killed after fetching $first bytes; the second attempt fetched $second bytes" \
  "($(python3 -c "print(round(100*$second/$full_bytes,2))")% of a full transfer)," \
  "read back $(stat 2 checkpoint_pages_read_back) kept pages (dropped as corrupt $(stat 2 checkpoint_pages_kept_corrupt))," \
  "reused $(stat 2 checkpoint_pages_resumed) of them ($(stat 2 checkpoint_pages_reused) pages reused in all)"
counters
echo "logs in $D"
