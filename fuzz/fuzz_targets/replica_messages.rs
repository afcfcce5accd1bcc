//! Fuzz the protocol core with forged messages, as if from authenticated replicas.
//!
//! The input is the forger's choices (`vsr::testing::forge`): which replica of a small
//! cluster (holding committed ops and a checkpoint) gets which message, with views and ops
//! near its own or at their extremes, interleaved with ticks, with the replicas' own
//! traffic, and with restarts into recovery. Checked: no panic. The core's safety
//! assertions are about its own state; a message that would break one cannot come from a
//! correct replica and must be dropped before any state changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsr::testing::forge::{play, target_cluster, Choices};

fuzz_target!(|data: &[u8]| {
    let mut cluster = target_cluster();
    play(&mut cluster, &mut Choices::new(data), 1_000);
});
