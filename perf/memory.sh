#!/usr/bin/env bash
# Replica memory over a long full-load run: builds, then runs perf/rss.sh, which starts
# vsr-load (and with it a local 3-replica cluster) and samples the resident set size of
# the replicas that run started, every 15 s.
#   perf/memory.sh            # 300 s, kv service, 1024 sessions / 16 connections
#   DURATION=60 perf/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-300}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p vsr -p vsr-load --bins >&2
exec perf/rss.sh "$TARGET/release" "${DURATION%s}"
