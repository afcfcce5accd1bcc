//! Reads in the simulator: how often clients read, in which mode, and what the checker
//! needs to judge a backup read's answer.
//!
//! Strict reads (`Operation::Query`) are ordered like any request, so the linearizability
//! check covers them as it covers writes: the model answers them at their op with
//! `query`. Backup reads (paper 6.3.2) are not ordered; the checker holds each answer to
//! the causal rule instead: the answering replica's commit number must be at least the op
//! the read said its session had seen (its writes' ops, its reads' commit numbers), and
//! the value must be the model's answer in the state right after that commit number
//! (`Checker::on_backup_read`). Lease reads (paper 6.3.1) answered at the primary are
//! held to linearizability: their commit number must be at least the op of every reply
//! that reached a client before the read was submitted (`Checker::on_lease_read`), and
//! their value the model's there; one that fell back to the log is a strict read.

use super::prng::Prng;
use super::service::{SimService, WorkloadShape};
use crate::client::{ClientSession, ReadMode};
use crate::protocol::{Body, ClientId, Message, Op, Operation, ReplyStatus, RequestNumber};
use bytes::Bytes;

/// How clients read, drawn per seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadRates {
    /// Chance that an operation a client submits is a read (if the service has queries).
    pub read_ppm: u32,
    /// Chance that a read is a backup read (else strict).
    pub backup_ppm: u32,
}

impl ReadRates {
    /// No reads: every operation is the service's random operation.
    pub fn none() -> ReadRates {
        ReadRates::default()
    }

    /// The rates of one seed: most seeds read, some mostly at backups, some not at all.
    pub fn draw(prng: &mut Prng) -> ReadRates {
        if prng.chance(150_000) {
            return ReadRates::none();
        }
        ReadRates {
            read_ppm: prng.between(100_000, 600_000) as u32,
            backup_ppm: *prng.pick(&[0, 500_000, 500_000, 900_000]),
        }
    }

    /// The next read to submit instead of a write, if this one is a read.
    pub fn next_read<S: SimService>(
        &self,
        shape: &WorkloadShape,
        prng: &mut Prng,
    ) -> Option<(Bytes, ReadMode)> {
        if self.read_ppm == 0 || !prng.chance(self.read_ppm) {
            return None;
        }
        let query = S::random_query(shape, prng)?;
        let mode = match prng.chance(self.backup_ppm) {
            true => ReadMode::Backup,
            false => ReadMode::Strict,
        };
        Some((query, mode))
    }
}

/// A backup read in flight, as the checker judges its answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRead {
    /// The reading client.
    pub client: ClientId,
    /// The read's number.
    pub number: RequestNumber,
    /// The op its session had seen when it sent it.
    pub seen: Op,
    /// The query.
    pub query: Bytes,
    /// A lease read at the primary (paper 6.3.1), held to linearizability, not only to
    /// the causal rule.
    pub lease: bool,
}

impl BackupRead {
    /// The backup read `session` has in flight, if any.
    pub fn in_flight(session: &ClientSession) -> Option<BackupRead> {
        let Body::Request(request) = &session.in_flight()?.body else {
            return None;
        };
        Some(BackupRead {
            client: request.client,
            number: request.request,
            seen: request.read_seen()?,
            query: request.read_query(),
            lease: request.operation == Operation::LeaseRead,
        })
    }

    /// The answer `message` gives this read, if it is one: the commit number it was read
    /// at, and the result.
    pub fn answer<'a>(&self, message: &'a Message) -> Option<(Op, &'a Bytes)> {
        let Body::Reply(reply) = &message.body else {
            return None;
        };
        let answers = reply.status == ReplyStatus::Read
            && reply.client == self.client
            && reply.request == self.number;
        answers.then_some((reply.op, &reply.result))
    }
}
