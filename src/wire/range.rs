//! Range checks: numbers no correct replica or client ever sends.
//!
//! The checksums prove that a frame is what its sender wrote, not that the sender is
//! correct. A peer that is buggy, of another version, or hostile can write any number, and
//! the protocol core asserts on its own state instead of re-checking its input (one
//! validation gate). So the gate also refuses values that cannot come from a correct
//! peer: views and ops so close to their type's maximum that the core's `+ 1` would wrap,
//! and field combinations that contradict each other (a commit above the op it commits up
//! to). Each refusal names the field, and the runtime closes the connection.
//!
//! The bounds leave ample room for real clusters: `VIEW_MAX` allows a view change every
//! millisecond for 49 days on a `u32`, `OP_MAX` is 2^62 ops (a billion ops a second for
//! 146 years).

use super::error::DecodeError;
use crate::protocol::{Body, Message, Op};

/// The largest view (or sender view, or last normal view) a frame may carry: the core's
/// own bound, so that the gate and the core agree.
pub use crate::protocol::VIEW_MAX;
/// The largest epoch a frame may carry (same headroom as views).
pub const EPOCH_MAX: u32 = u32::MAX - (1 << 16);
/// The largest op (or commit, or session) a frame may carry. Far from `u64::MAX`: an op
/// plus any entry count or checkpoint interval stays in range.
pub const OP_MAX: Op = 1 << 62;

/// The most pages a checkpoint may have: 2^26 pages of 4 KiB are 256 GiB of state. A
/// fetch sizes its page table by the count a NewState names, so the count is bounded
/// before anything is allocated for it.
pub const CHECKPOINT_PAGES_MAX: u64 = 1 << 26;

/// Refuses a decoded message whose numbers no correct peer sends.
pub fn check(message: &Message) -> Result<(), DecodeError> {
    let out_of_range = DecodeError::OutOfRange;
    if message.epoch > EPOCH_MAX {
        return Err(out_of_range("epoch above the maximum"));
    }
    if message.view > VIEW_MAX {
        return Err(out_of_range("view above the maximum"));
    }
    let ops_fit = |ops: &[Op]| ops.iter().all(|&op| op <= OP_MAX);
    match &message.body {
        Body::Request(request) => {
            if !ops_fit(&[request.session]) {
                return Err(out_of_range("request session above the maximum op"));
            }
        }
        Body::Reply(reply) => {
            if !ops_fit(&[reply.session, reply.op]) {
                return Err(out_of_range("reply op or session above the maximum op"));
            }
        }
        Body::Prepare(prepare) => {
            // The decoder already refused an empty Prepare.
            let last = prepare.op_first + (prepare.entries.len() as Op).saturating_sub(1);
            if !ops_fit(&[prepare.op_first, last, prepare.commit]) {
                return Err(out_of_range("prepare op or commit above the maximum op"));
            }
        }
        Body::PrepareOk(prepare_ok) => {
            if !ops_fit(&[prepare_ok.op]) {
                return Err(out_of_range("prepare_ok op above the maximum op"));
            }
        }
        Body::Commit(commit) => {
            if !ops_fit(&[commit.commit]) {
                return Err(out_of_range("commit above the maximum op"));
            }
        }
        Body::StartViewChange(svc) => {
            // A replica asks for views above its own, or calls for the one it is in.
            if svc.sender_view > message.view {
                return Err(out_of_range("start_view_change sender view above its view"));
            }
        }
        Body::DoViewChange(dvc) => {
            if dvc.last_normal_view > message.view {
                return Err(out_of_range(
                    "do_view_change last normal view above its view",
                ));
            }
            check_op_commit(
                dvc.op,
                dvc.commit,
                [
                    "do_view_change op above the maximum op",
                    "do_view_change commit above its op",
                ],
            )?;
            // The entries are a suffix after the commit: at most `op - commit` of them.
            if dvc.entries.len() as u64 > dvc.op - dvc.commit {
                return Err(out_of_range(
                    "do_view_change has more entries than op - commit",
                ));
            }
        }
        Body::StartView(start_view) => {
            check_op_commit(
                start_view.op,
                start_view.commit,
                [
                    "start_view op above the maximum op",
                    "start_view commit above its op",
                ],
            )?;
            check_entries_end(start_view.op_first, start_view.entries.len(), start_view.op)
                .map_err(|()| out_of_range("start_view entries beyond its op"))?;
        }
        Body::Recovery(_) => {}
        Body::RecoveryResponse(response) => {
            if !response.empty && !response.normal {
                return Err(out_of_range(
                    "recovery_response with state from a replica that is not normal",
                ));
            }
            check_op_commit(
                response.op,
                response.commit,
                [
                    "recovery_response op above the maximum op",
                    "recovery_response commit above its op",
                ],
            )?;
            if response.epoch_start > response.commit {
                return Err(out_of_range(
                    "recovery_response epoch start above its commit",
                ));
            }
        }
        Body::GetState(get_state) => {
            if !ops_fit(&[get_state.op]) {
                return Err(out_of_range("get_state op above the maximum op"));
            }
            if get_state.learner == Some(u64::MAX) {
                return Err(out_of_range("get_state learner identity beyond any"));
            }
        }
        Body::StartEpoch(start_epoch) => {
            if !ops_fit(&[start_epoch.op]) {
                return Err(out_of_range("start_epoch op above the maximum op"));
            }
            if start_epoch.configuration.epoch() != message.epoch || message.epoch == 0 {
                return Err(out_of_range(
                    "start_epoch for another epoch than its envelope's",
                ));
            }
            if !start_epoch.configuration.is_well_formed() {
                return Err(out_of_range(
                    "start_epoch configuration no reconfiguration installs",
                ));
            }
        }
        Body::EpochStarted => {}
        Body::NewState(new_state) => {
            check_op_commit(
                new_state.op,
                new_state.commit,
                [
                    "new_state op above the maximum op",
                    "new_state commit above its op",
                ],
            )?;
            check_entries_end(new_state.op_first, new_state.entries.len(), new_state.op)
                .map_err(|()| out_of_range("new_state entries beyond its op"))?;
            if let Some(checkpoint) = &new_state.checkpoint {
                // A checkpoint is taken of committed state only.
                if checkpoint.op > new_state.commit {
                    return Err(out_of_range("new_state checkpoint above its commit"));
                }
                if checkpoint.pages() > CHECKPOINT_PAGES_MAX {
                    return Err(out_of_range(
                        "new_state checkpoint with more pages than any",
                    ));
                }
            }
        }
        Body::GetCheckpoint(get) => {
            if !ops_fit(&[get.op]) {
                return Err(out_of_range("get_checkpoint op above the maximum op"));
            }
        }
        Body::CheckpointPart(part) => {
            if !ops_fit(&[part.op]) {
                return Err(out_of_range("checkpoint_part op above the maximum op"));
            }
        }
    }
    Ok(())
}

/// `op` and `commit` of one message: both in range, and `commit <= op` (a replica never
/// commits what it does not hold). The reasons name the message.
fn check_op_commit(op: Op, commit: Op, reasons: [&'static str; 2]) -> Result<(), DecodeError> {
    let [op_too_large, commit_above_op] = reasons;
    if op > OP_MAX {
        return Err(DecodeError::OutOfRange(op_too_large));
    }
    if commit > op {
        return Err(DecodeError::OutOfRange(commit_above_op));
    }
    Ok(())
}

/// Entries `op_first ..` (`count` of them) end at or before `op`, and start after op 0.
/// An empty list's `op_first` is the op after something the sender or asker holds.
fn check_entries_end(op_first: Op, count: usize, op: Op) -> Result<(), ()> {
    if op_first > OP_MAX + 1 {
        return Err(());
    }
    if count == 0 {
        return Ok(());
    }
    if op_first == 0 {
        return Err(());
    }
    match op_first.checked_add(count as Op - 1) {
        Some(last) if last <= op => Ok(()),
        _ => Err(()),
    }
}
