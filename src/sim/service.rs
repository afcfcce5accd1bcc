//! [`SimService`]: what the simulator needs from a service to run it, so that an
//! embedder can run the simulator on their own [`StateMachine`] (the bundled
//! [`Kv`] is one).
//!
//! The simulator checks any service the same way, because its reference model is a fresh
//! instance of the same service applied to the committed log in op order, with the
//! client table's rules (`model`): every reply a client accepts must equal the model's
//! result at that op, every replica's state must equal the model's whenever both have
//! applied the same ops, and every checkpoint must hold the same bytes on every replica
//! and in the model. So a service that is not deterministic (it reads a clock, iterates a
//! hash map in a random order, depends on memory addresses) fails in some seed, and
//! [`SimService::check_result`] lets the embedder add their own model of what results
//! must be.
//!
//! `examples/simulate_counter.rs` runs it on a small service of its own.

use super::prng::Prng;
use crate::service::kv::KvOp;
use crate::service::{Kv, StateMachine};
use bytes::Bytes;

/// What shapes the workload: the simulator draws these per seed; a service uses them as
/// it sees fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadShape {
    /// How many distinct keys (or objects) to spread operations over, 1..=6: few keys
    /// make concurrent requests collide.
    pub keys: usize,
    /// The longest value to write, in bytes (at least 1): long values make long entries.
    pub value_bytes_max: usize,
    /// The longest operation the replicas accept.
    pub request_body_bytes_max: u32,
}

/// A service the simulator can run. `PartialEq` compares a replica's state with the
/// reference model's (after the same ops, every replica's must be equal to it), and
/// `Debug` shows both when they differ.
pub trait SimService: StateMachine + PartialEq + std::fmt::Debug + Sized + 'static {
    /// A fresh instance: every replica, and the reference model, start from one.
    fn fresh() -> Self;

    /// The next operation a client submits: at most `shape.request_body_bytes_max` bytes
    /// (longer ones are refused by the replicas; see `oversized_operation`).
    fn random_operation(shape: &WorkloadShape, prng: &mut Prng) -> Bytes;

    /// An operation longer than `body_bytes_max`, which the replicas must refuse
    /// without ordering it.
    fn oversized_operation(shape: &WorkloadShape, prng: &mut Prng, body_bytes_max: u32) -> Bytes {
        let _ = shape;
        let length = body_bytes_max as u64 + prng.between(1, 64);
        Bytes::from(vec![b'x'; length as usize])
    }

    /// A read-only query (for [`StateMachine::query`]) a client may read with, strict or
    /// at a backup (`sim::reads`); `None`: the service has none, and clients only write.
    fn random_query(shape: &WorkloadShape, prng: &mut Prng) -> Option<Bytes> {
        let _ = (shape, prng);
        None
    }

    /// An operation, for traces.
    fn describe_operation(operation: &Bytes) -> String {
        format!("{} bytes", operation.len())
    }

    /// The embedder's own model of results: called by the reference model with its
    /// state right after it executed `operation` (in op order, once per committed
    /// request) and the result it produced. An `Err` is a failure of the seed (check
    /// `model`), with the reason given.
    fn check_result(&self, operation: &Bytes, result: &Bytes) -> Result<(), String> {
        let _ = (operation, result);
        Ok(())
    }
}

/// The page size of the simulator's kv: tiny, so that even the few keys a workload
/// uses make a checkpoint of several pages, and a transfer (with the small requests and
/// windows the seeds draw) takes several parts, some lost, corrupted or re-targeted.
pub const SIM_KV_PAGE_BYTES: usize = 32;

impl SimService for Kv {
    fn fresh() -> Kv {
        Kv::with_page_bytes(SIM_KV_PAGE_BYTES)
    }

    fn random_operation(shape: &WorkloadShape, prng: &mut Prng) -> Bytes {
        kv_workload(shape).next_op(prng).encode()
    }

    fn oversized_operation(shape: &WorkloadShape, prng: &mut Prng, body_bytes_max: u32) -> Bytes {
        kv_workload(shape)
            .oversized_op(prng, body_bytes_max)
            .encode()
    }

    fn random_query(shape: &WorkloadShape, prng: &mut Prng) -> Option<Bytes> {
        Some(kv_workload(shape).next_get(prng).encode())
    }

    fn describe_operation(operation: &Bytes) -> String {
        match KvOp::decode(operation) {
            Some(op) => format!("{op:?}"),
            None => format!("{} undecodable bytes", operation.len()),
        }
    }
}

fn kv_workload(shape: &WorkloadShape) -> super::workload::Workload {
    super::workload::Workload::new(shape.keys, shape.value_bytes_max)
}
