#!/usr/bin/env bash
# etcd baseline for the durability benchmark (issue 10): a 3-member etcd cluster on
# 127.0.0.1, data dirs on the local disk (not tmpfs), puts of 64-byte values at several
# client concurrencies, median of REPS runs each.
#
#   perf/etcd.sh                                  # clients 1 16 64 256 1024, 3 runs, 10 s each
#   CLIENTS="1 64" REPS=1 DURATION=5s perf/etcd.sh
#   TARGET=all perf/etcd.sh                       # clients spread over all 3 members
#   CONNS=100 perf/etcd.sh                        # more gRPC connections (default 16)
#
# Load tool, and why: Debian ships etcd 3.4 (etcd-server, etcd-client) but not etcd's
# `benchmark` tool (tools/benchmark is left out of golang-etcd-server-dev too), and
# `etcdctl check perf` cannot do this job: its workloads are fixed (256 B keys, 1 KiB
# values, 50..1000 clients, rate-limited to 150..15000 puts/s, 60 s). Parallel `etcdctl put`
# processes would measure process start-up, not etcd. So a ~100-line Go driver (below, built
# against Debian's clientv3 sources, GOPATH mode, no network) does what `benchmark put`
# does: N goroutines share C gRPC connections, each keeps one Put outstanding (unique 14 B
# keys, 64 B values), after a warmup; it reports puts/s and p50/p99 latency of the
# measured window. By default the clients talk to the leader only (as vsr-load talks to the
# primary; followers would forward each proposal to the leader, an extra hop).
# etcd runs with its defaults: fsync (fdatasync) of the WAL before each commit, batched.
# Run at normal priority (the shared machine's other jobs run at nice 19).
set -euo pipefail

CLIENTS=${CLIENTS:-1 16 64 256 1024}
REPS=${REPS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
TARGET=${TARGET:-leader}
CONNS=${CONNS:-16}                  # gRPC connections: min(clients, CONNS)
PORT=${PORT:-23790}                 # clients on PORT+1..3, peers on PORT+11..13
BASE=${BASE:-/var/tmp}              # data dirs go under here: must be a real disk

command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v go >/dev/null \
  && [ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client golang-go golang-etcd-server-dev >/dev/null
}

DIR=$(mktemp -d "$BASE/etcd-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
fstype=$(df --output=fstype "$DIR" | tail -1)
[ "$fstype" != tmpfs ] || { echo "$DIR is on tmpfs: set BASE to a directory on disk" >&2; exit 1; }

# The load driver.
mkdir "$DIR/driver"
cat >"$DIR/driver/main.go" <<'GO'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated")
	clients := flag.Int("clients", 1, "concurrent clients, each with one put outstanding")
	conns := flag.Int("conns", 1, "gRPC connections the clients share")
	valSize := flag.Int("val-size", 64, "value bytes")
	warmup := flag.Duration("warmup", 2*time.Second, "not measured")
	duration := flag.Duration("duration", 10*time.Second, "measured")
	flag.Parse()

	cs := make([]*clientv3.Client, *conns)
	for i := range cs {
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		cs[i] = c
	}
	val := strings.Repeat("v", *valSize)
	from := time.Now().Add(*warmup)
	to := from.Add(*duration)
	lat := make([][]time.Duration, *clients) // per client: no locking
	errs := make([]int, *clients)
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := cs[i%len(cs)]
			for n := 0; ; n++ {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.Put(ctx, fmt.Sprintf("k%04d-%08d", i, n), val)
				cancel()
				t1 := time.Now()
				if t0.Before(from) || t1.After(to) { // count only puts wholly inside the window
					continue
				}
				if err != nil {
					errs[i]++
				} else {
					lat[i] = append(lat[i], t1.Sub(t0))
				}
			}
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	nerr := 0
	for i := range lat {
		all = append(all, lat[i]...)
		nerr += errs[i]
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(p*float64(len(all)-1))].Microseconds()
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("clients=%d conns=%d ok=%d errors=%d puts/s=%.0f p50_us=%d p99_us=%d driver_cpu=%.0f%%",
		*clients, *conns, len(all), nerr, float64(len(all))/duration.Seconds(), pct(0.50), pct(0.99),
		100*cpu.Seconds()/(*warmup+*duration).Seconds())
}
GO
(cd "$DIR/driver" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o etcd-put main.go)

# The disk's cost of a synchronous 4 KiB write next to the data dirs (it varies: the disk is shared).
fsync_probe() {
  LC_ALL=C dd if=/dev/zero of="$DIR/probe" bs=4k count=500 oflag=dsync 2>&1 |
    awk '/copied/ { printf "dd 4 KiB oflag=dsync: %.0f us per write\n", $(NF-3) / 500 * 1e6 }'
  rm -f "$DIR/probe"
}

# The cluster.
cluster="" endpoints=""
for i in 1 2 3; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((PORT + 10 + i))"
  endpoints+="${endpoints:+,}127.0.0.1:$((PORT + i))"
done
for i in 1 2 3; do
  etcd --name "m$i" --data-dir "$DIR/m$i" \
    --listen-client-urls "http://127.0.0.1:$((PORT + i))" --advertise-client-urls "http://127.0.0.1:$((PORT + i))" \
    --listen-peer-urls "http://127.0.0.1:$((PORT + 10 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-token etcd-bench --initial-cluster-state new \
    >"$DIR/m$i.log" 2>&1 &
  PIDS+=($!)
done
deadline=$((SECONDS + 30))
until etcdctl --endpoints="$endpoints" endpoint health >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster not healthy after 30 s; logs:" >&2; tail -n 5 "$DIR"/m*.log >&2; exit 1; }
  sleep 0.2
done
# `endpoint status` fields: endpoint, id, version, db size, is leader, ...
leader=$(etcdctl --endpoints="$endpoints" endpoint status | awk -F', ' '$5 == "true" { print $1 }')
[ "$TARGET" = all ] && target=$endpoints || target=$leader

{
  echo "etcd: $(etcd --version | head -1), cluster $endpoints, leader $leader, load sent to: $target"
  echo "data dirs: $DIR on $(df --output=source "$DIR" | tail -1) ($fstype); kernel $(uname -r), $(nproc) cpus"
  echo "command: etcd-put --endpoints=$target --clients=N --conns=min(N,$CONNS) --val-size=64 --warmup=$WARMUP --duration=$DURATION"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(fsync_probe)"
} >&2

# Per run, besides the driver's line: CPU used by the 3 members, how busy the whole machine
# was (others' jobs included), and etcd's own count and mean time of the leader's WAL fsyncs
# (its group commit).
etcdcpu() { cat /proc/"${PIDS[0]}"/stat /proc/"${PIDS[1]}"/stat /proc/"${PIDS[2]}"/stat | awk -v hz="$(getconf CLK_TCK)" '{ s += $14 + $15 } END { print s / hz }'; }
machcpu() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
walsync() { curl -s "http://$leader/metrics" | awk '/^etcd_disk_wal_fsync_duration_seconds_(count|sum)/ { v[$1] = $2 } END { print v["etcd_disk_wal_fsync_duration_seconds_count"], v["etcd_disk_wal_fsync_duration_seconds_sum"] }'; }
# Repetitions interleaved (1 16 64 ... 1 16 64 ...) so that drift in the machine's load
# spreads over all concurrencies.
results="$DIR/results.txt"
for rep in $(seq "$REPS"); do
  for n in $CLIENTS; do
    read -r c0 s0 < <(walsync); e0=$(etcdcpu); t0=$EPOCHREALTIME; read -r b0 a0 < <(machcpu)
    line=$("$DIR/driver/etcd-put" --endpoints="$target" --clients="$n" --conns=$((n < CONNS ? n : CONNS)) \
      --val-size=64 --warmup="$WARMUP" --duration="$DURATION")
    read -r c1 s1 < <(walsync); e1=$(etcdcpu); t1=$EPOCHREALTIME; read -r b1 a1 < <(machcpu)
    line+=" etcd_cpu=$(awk -v e="$e0" -v f="$e1" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f%%", (f - e) / (b - a) * 100 }') machine_busy=$(( (b1 - b0) * 100 * $(nproc) / (a1 - a0) ))%"
    echo "$line leader_wal_fsyncs=$((c1 - c0)) mean_fsync_us=$(awk -v c=$((c1 - c0)) -v s="$s1" -v t="$s0" 'BEGIN { printf "%.0f", c ? (s - t) / c * 1e6 : 0 }')" | tee -a "$results" >&2
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); $(fsync_probe)" >&2

echo "| clients | conns | puts/s (median of $REPS) | p50 us | p99 us | runs (puts/s) | errors |"
echo "|---:|---:|---:|---:|---:|---|---:|"
for n in $CLIENTS; do
  # The median run by throughput; its latencies are reported alongside.
  grep "^clients=$n " "$results" | tr '=' ' ' | sort -k10,10n | awk -v reps="$REPS" '
    { line[NR] = $0; all = all (NR > 1 ? ", " : "") $10; errs += $8 }
    END { split(line[int((NR + 1) / 2)], f, " ")
          printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[2], f[4], f[10], f[12], f[14], all, errs }'
done
