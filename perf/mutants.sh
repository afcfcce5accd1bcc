#!/usr/bin/env bash
# Mutation testing of the protocol core, with the simulator's tests as the oracle
# (perf/mutants.md has the last report). Needs cargo-mutants (`cargo install cargo-mutants`).
#
#   perf/mutants.sh                 # view change, recovery, state transfer, restart (~430)
#   perf/mutants.sh --shard 0/8     # one eighth of them (any cargo-mutants flag works)
#
# Each mutant is built and judged by the scenario tests, 500 random seeds (plus the
# regression seeds), the forged-message test and the in-memory smoke tests; on a 2-core
# machine that is 30-60 s a mutant. Results land in target/mutants/mutants.out/
# (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
exec cargo mutants \
  --file src/protocol/replica/view_change.rs \
  --file src/protocol/replica/recovery.rs \
  --file src/protocol/replica/state_transfer.rs \
  --file src/protocol/replica/restart.rs \
  --timeout 240 --output target/mutants "$@" \
  -- --test sim_scenarios --test sim_disks --test sim_seeds --test sim_faults --test forged_messages --test core_smoke
