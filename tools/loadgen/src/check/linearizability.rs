//! A linearizability checker for one register (one kv key): Wing & Gong's search as
//! improved by Lowe ("Testing for linearizability", 2017) and used by Porcupine. Events
//! (calls and returns) sit in a doubly linked list in time order; the search linearizes a
//! call whose operation is legal in the current state by lifting it (and its return) out of
//! the list, and backtracks when it meets a return whose call was not linearized. Visited
//! (set of linearized operations, state) pairs are memoised; the set is fingerprinted
//! with 128-bit Zobrist hashing (XOR of a random key per operation), so a step costs O(1)
//! and a false match needs a 2^-128-likely collision. The search is bounded by a state count.
//!
//! An operation whose outcome is unknown (timed out, or still in flight at the end) has
//! its return at infinity and accepts any result: it may have taken effect at any point
//! after its call, or not at all (it can always be linearized last).

use std::collections::HashSet;

/// A value id: the checker compares values by identity, interned by the caller.
pub type Value = u32;

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Write a value.
    Put(Value),
    /// Read.
    Get,
    /// Remove.
    Delete,
    /// Write `new` if the current value is `old` (`None`: absent).
    Cas {
        /// Expected current value.
        old: Option<Value>,
        /// Value to write.
        new: Value,
    },
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Put, delete or a successful cas.
    Ok,
    /// A read's value (`None`: absent).
    Read(Option<Value>),
    /// A failed cas and the value it saw.
    CasFail(Option<Value>),
}

/// One operation of the history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client session issued it (for reports).
    pub session: usize,
    /// Invocation time (ns from the start of the run).
    pub call_ns: u64,
    /// Completion time; `None` if the outcome is unknown.
    pub return_ns: Option<u64>,
    /// The request.
    pub input: Input,
    /// The result; `None` if unknown.
    pub output: Option<Output>,
}

/// The state of the register: its value, if any.
type State = Option<Value>;

/// The sequential specification: the state after `input` with result `output`, or `None`
/// if that result is impossible in `state`.
pub fn step(state: State, input: Input, output: Option<Output>) -> Option<State> {
    match (input, output) {
        (Input::Put(value), None | Some(Output::Ok)) => Some(Some(value)),
        (Input::Delete, None | Some(Output::Ok)) => Some(None),
        (Input::Get, None) => Some(state),
        (Input::Get, Some(Output::Read(seen))) => (seen == state).then_some(state),
        (Input::Cas { old, new }, None) => Some(if state == old { Some(new) } else { state }),
        (Input::Cas { old, new }, Some(Output::Ok)) => (state == old).then_some(Some(new)),
        (Input::Cas { old, .. }, Some(Output::CasFail(seen))) => {
            (state != old && seen == state).then_some(state)
        }
        _ => None,
    }
}

/// The checker's answer for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A legal sequential order exists.
    Linearizable,
    /// None exists. `stuck`: the operation whose return came before it could be ordered,
    /// at the deepest point the search reached; `candidates`: the operations that were
    /// concurrent there (callable before that return); `prefix`: the longest legal order
    /// found (operation indices).
    Violation {
        /// The operation that could not be linearized.
        stuck: usize,
        /// Operations tried before its return.
        candidates: Vec<usize>,
        /// The longest legal order found.
        prefix: Vec<usize>,
    },
    /// The search reached its bound without an answer.
    Unknown {
        /// States explored.
        states: u64,
    },
}

const NONE: usize = usize::MAX;

/// The event list: node `2i` is operation i's call, `2i + 1` its return; `HEAD` is last.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Events {
    fn new(operations: &[Operation]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * operations.len());
        for (i, op) in operations.iter().enumerate() {
            order.push((op.call_ns, false, 2 * i));
            // A return at the same instant as a call sorts after it: they overlap, which is
            // the permissive (sound for a checker) reading of equal timestamps.
            order.push((op.return_ns.unwrap_or(u64::MAX), true, 2 * i + 1));
        }
        order.sort_unstable();
        let head = 2 * operations.len();
        let mut next = vec![NONE; head + 1];
        let mut prev = vec![NONE; head + 1];
        let mut last = head;
        for &(_, _, node) in &order {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Events { next, prev, head }
    }

    fn remove(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    /// Re-inserts a node removed last-in-first-out: its own links are still valid.
    fn restore(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NONE {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.remove(2 * op);
        self.remove(2 * op + 1);
    }

    fn unlift(&mut self, op: usize) {
        self.restore(2 * op + 1);
        self.restore(2 * op);
    }
}

fn zobrist_keys(count: usize) -> Vec<u128> {
    let mut rng = crate::workload::Rng::new(0x5EED_0F2B);
    (0..count)
        .map(|_| ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128)
        .collect()
}

/// Checks one key's history from the initial state `initial`, exploring at most
/// `states_max` search states.
pub fn check(operations: &[Operation], initial: State, states_max: u64) -> Verdict {
    let mut events = Events::new(operations);
    let keys = zobrist_keys(operations.len());
    let mut linearized: u128 = 0;
    let mut state = initial;
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    // The search stack: (operation, state before it). Its depth ≤ operations.len().
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut deepest: Option<(usize, Vec<usize>, Vec<usize>)> = None;
    let mut states: u64 = 0;
    let mut entry = events.next[events.head];
    while events.next[events.head] != NONE {
        states += 1;
        if states > states_max {
            return Verdict::Unknown { states };
        }
        assert!(
            entry != NONE,
            "the list ends with a return while it is not empty"
        );
        let op = entry / 2;
        if entry.is_multiple_of(2) {
            let operation = &operations[op];
            if let Some(after) = step(state, operation.input, operation.output) {
                if seen.insert((linearized ^ keys[op], after)) {
                    calls.push((op, state));
                    state = after;
                    linearized ^= keys[op];
                    events.lift(op);
                    entry = events.next[events.head];
                    continue;
                }
            }
            entry = events.next[entry];
        } else {
            if deepest
                .as_ref()
                .is_none_or(|(_, _, prefix)| calls.len() > prefix.len())
            {
                deepest = Some((
                    op,
                    candidates_before(&events, entry),
                    calls.iter().map(|c| c.0).collect(),
                ));
            }
            let Some((undo, before)) = calls.pop() else {
                let (stuck, candidates, prefix) = deepest.expect("recorded at this return");
                return Verdict::Violation {
                    stuck,
                    candidates,
                    prefix,
                };
            };
            state = before;
            linearized ^= keys[undo];
            events.unlift(undo);
            entry = events.next[2 * undo];
        }
    }
    Verdict::Linearizable
}

/// The operations whose calls precede `ret` in the list: those that could go before it.
fn candidates_before(events: &Events, ret: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut node = events.next[events.head];
    while node != ret && node != NONE {
        if node.is_multiple_of(2) {
            out.push(node / 2);
        }
        node = events.next[node];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        session: usize,
        call: u64,
        ret: Option<u64>,
        input: Input,
        output: Option<Output>,
    ) -> Operation {
        Operation {
            session,
            call_ns: call,
            return_ns: ret,
            input,
            output,
        }
    }

    fn ok(call: u64, ret: u64, input: Input, output: Output) -> Operation {
        op(0, call, Some(ret), input, Some(output))
    }

    fn is_violation(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Violation { .. })
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            ok(0, 1, Input::Get, Output::Read(None)),
            ok(2, 3, Input::Put(1), Output::Ok),
            ok(4, 5, Input::Get, Output::Read(Some(1))),
            ok(
                6,
                7,
                Input::Cas {
                    old: Some(1),
                    new: 2,
                },
                Output::Ok,
            ),
            ok(
                8,
                9,
                Input::Cas {
                    old: Some(1),
                    new: 3,
                },
                Output::CasFail(Some(2)),
            ),
            ok(10, 11, Input::Delete, Output::Ok),
            ok(12, 13, Input::Get, Output::Read(None)),
        ];
        assert_eq!(check(&history, None, 1000), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        // put(1) spans [0,10]; one read sees the old value, a later overlapping one the new.
        let history = [
            ok(0, 10, Input::Put(1), Output::Ok),
            ok(1, 2, Input::Get, Output::Read(None)),
            ok(3, 4, Input::Get, Output::Read(Some(1))),
        ];
        assert_eq!(check(&history, None, 1000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_a_violation() {
        let history = [
            ok(0, 1, Input::Put(1), Output::Ok),
            ok(2, 3, Input::Get, Output::Read(None)),
        ];
        let verdict = check(&history, None, 1000);
        assert!(is_violation(&verdict), "{verdict:?}");
        if let Verdict::Violation { stuck, prefix, .. } = verdict {
            assert_eq!(stuck, 1);
            assert_eq!(prefix, vec![0]);
        }
    }

    #[test]
    fn reads_going_back_in_time_are_a_violation() {
        // Two writes in order, then two sequential reads that see them in reverse order.
        let history = [
            ok(0, 1, Input::Put(1), Output::Ok),
            ok(0, 5, Input::Put(2), Output::Ok),
            ok(6, 7, Input::Get, Output::Read(Some(2))),
            ok(8, 9, Input::Get, Output::Read(Some(1))),
        ];
        assert!(is_violation(&check(&history, None, 1000)));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_a_violation() {
        let history = [
            ok(0, 1, Input::Put(1), Output::Ok),
            ok(
                2,
                10,
                Input::Cas {
                    old: Some(1),
                    new: 2,
                },
                Output::Ok,
            ),
            ok(
                3,
                11,
                Input::Cas {
                    old: Some(1),
                    new: 3,
                },
                Output::Ok,
            ),
        ];
        assert!(is_violation(&check(&history, None, 1000)));
    }

    #[test]
    fn cas_failure_must_report_the_current_value() {
        let history = [
            ok(0, 1, Input::Put(1), Output::Ok),
            ok(
                2,
                3,
                Input::Cas {
                    old: Some(5),
                    new: 2,
                },
                Output::CasFail(Some(7)),
            ),
        ];
        assert!(is_violation(&check(&history, None, 1000)));
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_have_taken_effect() {
        // A timed-out put(2): one read sees it, and the history stays linearizable...
        let seen = [
            ok(0, 1, Input::Put(1), Output::Ok),
            op(1, 2, None, Input::Put(2), None),
            ok(5, 6, Input::Get, Output::Read(Some(2))),
        ];
        assert_eq!(check(&seen, None, 1000), Verdict::Linearizable);
        // ...or no read sees it, which is also fine.
        let unseen = [
            ok(0, 1, Input::Put(1), Output::Ok),
            op(1, 2, None, Input::Put(2), None),
            ok(5, 6, Input::Get, Output::Read(Some(1))),
        ];
        assert_eq!(check(&unseen, None, 1000), Verdict::Linearizable);
        // But it cannot take effect before it was called.
        let early = [
            ok(0, 1, Input::Get, Output::Read(Some(2))),
            op(1, 2, None, Input::Put(2), None),
        ];
        assert!(is_violation(&check(&early, None, 1000)));
    }

    #[test]
    fn many_concurrent_writers_with_backtracking() {
        // Eight overlapping puts, then a read of the one that must have been last: the
        // search has to try several orders; memoisation keeps it small.
        let mut history: Vec<Operation> = (0..8)
            .map(|v| ok(v, 100 + v, Input::Put(v as u32), Output::Ok))
            .collect();
        history.push(ok(200, 201, Input::Get, Output::Read(Some(3))));
        assert_eq!(check(&history, None, 100_000), Verdict::Linearizable);
        history.push(ok(202, 203, Input::Get, Output::Read(Some(4))));
        assert!(is_violation(&check(&history, None, 100_000)));
    }

    #[test]
    fn the_bound_gives_unknown_not_a_wrong_answer() {
        let mut history: Vec<Operation> = (0..12)
            .map(|v| ok(0, 100, Input::Put(v as u32), Output::Ok))
            .collect();
        history.push(ok(200, 201, Input::Get, Output::Read(Some(99))));
        assert!(matches!(check(&history, None, 50), Verdict::Unknown { .. }));
    }
}
