//! Nothing a peer sends makes a replica panic (issue: hardening). Forged messages, as if
//! from authenticated replicas, with views and ops near the target's own and at their
//! extremes, fed to the replicas of a small cluster that holds committed ops and a
//! checkpoint. Deterministic: the forger's choices come from a fixed-seed PRNG. The fuzz
//! target `replica_messages` runs the same forger on a fuzzer's inputs.

use vsr::sim::Prng;
use vsr::testing::forge::{play, target_cluster, Choices};

#[test]
fn forged_messages_never_panic_a_replica() {
    // `VSR_FORGE_SEEDS=N` runs longer (each seed forges up to 2,000 messages).
    let seeds: u64 = std::env::var("VSR_FORGE_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(200);
    let mut forged = 0;
    for seed in 0..seeds {
        let mut prng = Prng::new(seed);
        let bytes: Vec<u8> = (0..65_536).map(|_| prng.next_u64() as u8).collect();
        let mut cluster = target_cluster();
        forged += play(&mut cluster, &mut Choices::new(&bytes), 2_000);
    }
    assert!(
        forged > seeds as usize * 1_000,
        "only {forged} messages forged"
    );
    eprintln!("{forged} forged messages");
}
