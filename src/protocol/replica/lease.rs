//! Reads at the primary under a lease (paper 6.3.1).
//!
//! A backup grants its primary a lease with each acknowledgement of a Prepare or Commit
//! (the PrepareOk echoes the message's `stamp`, the primary's monotonic clock when it sent
//! it) and promises, for `lease_ns` on its own monotonic clock from the moment it
//! granted, not to take part in a view change: it neither asks for one, nor raises its
//! view, nor sends a DoViewChange (`may_change_view`). The primary answers a lease read
//! from its state (`StateMachine::query`) while f backups' leases hold, each counted from
//! the stamp it echoed, and shortened by the drift bound ρ (`held_ns`); otherwise it
//! answers `Behind` and the client sends the query through the log (a strict read).
//!
//! Why an answer is linearizable (ARCHITECTURE.md, "Leases", has the long form): while
//! the primary of view v holds f leases, none of those f backups has left view v by a
//! DoViewChange, and neither has the primary; a later view needs f+1 DoViewChanges, and
//! only f replicas are left to send them. So no later view has started, no op has
//! committed outside this primary, and every write that completed was executed here
//! first: the primary's state is the latest. A new primary must also hold every op
//! earlier views committed: it answers only once it has committed the log its view
//! started with (`view_start_op`), and, to leave no doubt about leases granted to an
//! earlier primary, not before a full lease, stretched by the drift bound, has passed on
//! its own clock since it started the view (`wait_ns`).
//!
//! The drift argument: clocks run at rates within [1-ρ, 1+ρ] of real time. A promise of
//! L on the backup's clock lasts at least L/(1+ρ) of real time from the grant, which is
//! after the primary's send; the primary counts at most H = L(1-ρ)/(1+ρ) on its own clock
//! from the send, at most H/(1-ρ) = L/(1+ρ) of real time. A wait of W = L(1+ρ)/(1-ρ) on
//! one clock outlasts any promise of L on another (at most L/(1-ρ) of real time).
//!
//! A replica that restarts cannot know what it promised before: it takes part in no view
//! change until W has passed on its clock since its first reading (`on_first_reading`).
//! A driver that never passes a clock gets no leases: its replicas ask for none and grant
//! none, and lease reads go through the log.

use super::*;
use crate::protocol::client_table::RouteToken;
use bytes::Bytes;

/// Parts per million: the unit of `Config::clock_drift_ppm`.
const PPM: u128 = 1_000_000;

/// What a replica knows about leases: its clock, its promise, and, as the primary, the
/// leases it holds. Built at start; the primary's part is reset whenever the replica
/// enters normal status (`on_enter_normal`).
#[derive(Clone, Debug, Default)]
pub(super) struct Lease {
    /// The driver's latest monotonic clock reading (ns); 0: none yet.
    now_ns: u64,
    /// No view change before this reading (the backup's promise, or the wait after a
    /// restart); 0: none.
    promised_until_ns: u64,
    /// The replica restarted: its first reading starts the wait (`on_first_reading`).
    wait_at_first_reading: bool,
    /// As the primary of its view: the reading at which it became so (echoes stamped
    /// earlier come from another view or incarnation and grant nothing), and the first
    /// reading at which it may answer a lease read (it waits out earlier leases).
    view_start_ns: u64,
    /// See `view_start_ns`.
    reads_from_ns: u64,
    /// As the primary: the op its view's log ended at when the view started; it answers
    /// lease reads only once it has committed it.
    view_start_op: Op,
    /// As the primary: per replica index, the stamp of the latest lease it granted in
    /// this view (0: none).
    granted: Vec<LeaseStamp>,
}

/// The lease a primary may count on from an acknowledgement of a message it sent:
/// `lease_ns` shortened so that drift cannot stretch it past the backup's promise (see
/// the module docs). Rounded down.
pub fn held_ns(lease_ns: u64, drift_ppm: u32) -> u64 {
    let drift = drift_ppm as u128;
    (lease_ns as u128 * (PPM - drift) / (PPM + drift)) as u64
}

/// How long to wait on one's own clock so that any lease of `lease_ns` granted before,
/// on any clock within the drift bound, has run out. Rounded up.
pub fn wait_ns(lease_ns: u64, drift_ppm: u32) -> u64 {
    let drift = drift_ppm as u128;
    (lease_ns as u128 * (PPM + drift)).div_ceil(PPM - drift) as u64
}

impl Lease {
    pub(super) fn new(replica_count: usize, restarted: bool) -> Lease {
        Lease {
            wait_at_first_reading: restarted,
            granted: vec![0; replica_count],
            ..Lease::default()
        }
    }

    /// The driver's clock, or `None` before its first reading.
    fn now(&self) -> Option<u64> {
        (self.now_ns > 0).then_some(self.now_ns)
    }
}

impl<S: StateMachine> Replica<S> {
    /// Sets the monotonic clock leases are measured with (paper 6.3.1): nanoseconds
    /// that never go back and run within `Config::clock_drift_ppm` of real time, in any
    /// base of the driver's choosing (greater than 0). The driver calls it before every
    /// input it hands over, and right before the requests it reads: a lease read is
    /// judged at the latest reading. A driver that never calls it gets no leases.
    pub fn set_monotonic_ns(&mut self, monotonic_ns: u64) {
        debug_assert!(monotonic_ns > 0, "0 means no reading");
        debug_assert!(
            monotonic_ns >= self.lease.now_ns,
            "a monotonic clock went back"
        );
        let first = self.lease.now_ns == 0 && monotonic_ns > 0;
        self.lease.now_ns = self.lease.now_ns.max(monotonic_ns);
        if first {
            self.on_first_reading();
        }
    }

    /// A restarted replica may have promised a lease just before it stopped, and
    /// cannot remember: it takes part in no view change until any such lease has run
    /// out (a wait from its first reading, which comes after anything it granted).
    fn on_first_reading(&mut self) {
        if self.lease.wait_at_first_reading && self.config.lease_ns() > 0 {
            let wait = wait_ns(self.config.lease_ns(), self.config.clock_drift_ppm);
            self.lease.promised_until_ns = self.lease.now_ns + wait;
            tracing::debug!(
                replica = self.index,
                wait_ms = wait / 1_000_000,
                "restarted: no view change until any lease granted before has run out"
            );
        }
        self.lease.wait_at_first_reading = false;
    }

    /// The stamp a Prepare or Commit the primary sends now carries (0: no lease asked:
    /// leases are off or there is no clock).
    pub(super) fn lease_stamp(&self) -> LeaseStamp {
        match self.config.lease_ns() {
            0 => 0,
            _ => self.lease.now().unwrap_or(0),
        }
    }

    /// A backup acknowledges a Prepare or Commit of its primary stamped `stamp`: it
    /// grants the lease (promising no view change for `lease_ns` from now, on its own
    /// clock) and returns the stamp to echo, or 0 when it grants none.
    pub(super) fn grant_lease(&mut self, stamp: LeaseStamp) -> LeaseStamp {
        assert_eq!(
            self.status,
            Status::Normal,
            "a lease is granted in normal status"
        );
        assert!(!self.is_primary());
        let lease_ns = self.config.lease_ns();
        let Some(now) = self.lease.now() else {
            return 0;
        };
        if stamp == 0 || lease_ns == 0 {
            return 0;
        }
        if self.asks.follow {
            // A replica holding a later view asked for a view change, and only one can
            // bring it back (`view_change`): grant no new lease, so that the promise runs
            // out and this replica can follow the ask when it comes again.
            return 0;
        }
        self.lease.promised_until_ns = self.lease.promised_until_ns.max(now + lease_ns);
        stamp
    }

    /// Whether this replica may ask for, raise its view in, or vote in a view change
    /// now: not while a lease it granted (or may have granted before a restart) runs.
    /// Drops the input with the reason when it may not.
    pub(super) fn may_change_view(&mut self, what: &'static str) -> bool {
        if self.lease.now_ns < self.lease.promised_until_ns {
            self.stats.view_changes_held_by_lease += 1;
            self.drop_reason(what, "a lease this replica granted still runs");
            return false;
        }
        true
    }

    /// Whether a lease this replica granted (or may have granted before a restart)
    /// still runs on its clock.
    pub fn lease_promised(&self) -> bool {
        self.lease.now_ns < self.lease.promised_until_ns
    }

    /// Resets the primary's part: called on entering normal status in a view.
    pub(super) fn lease_on_enter_normal(&mut self) {
        let n = self.configuration.replica_count() as usize;
        self.lease.granted = vec![0; n];
        self.lease.view_start_op = self.log.op();
        let now = self.lease.now_ns;
        self.lease.view_start_ns = now;
        self.lease.reads_from_ns =
            now + wait_ns(self.config.lease_ns(), self.config.clock_drift_ppm);
    }

    /// The primary took an acknowledgement from `from` that echoed `stamp`.
    pub(super) fn lease_on_prepare_ok(&mut self, from: ReplicaIndex, stamp: LeaseStamp) {
        debug_assert!(self.is_primary());
        // Only a stamp this primary sent in this view, in this incarnation, grants a
        // lease from it: nothing from the wire is trusted.
        if stamp == 0 || stamp < self.lease.view_start_ns || stamp > self.lease.now_ns {
            return;
        }
        if let Some(granted) = self.lease.granted.get_mut(from as usize) {
            *granted = (*granted).max(stamp);
        }
    }

    /// Whether the primary may answer a read from its state now: it holds unexpired
    /// leases from f backups, has waited out the leases of earlier primaries, and has
    /// committed the log its view started with.
    pub fn holds_lease(&self) -> bool {
        let Some(now) = self.lease.now() else {
            return false;
        };
        let lease_ns = self.config.lease_ns();
        if !self.is_primary() || lease_ns == 0 {
            return false;
        }
        if now < self.lease.reads_from_ns || self.commit < self.lease.view_start_op {
            return false;
        }
        let held = held_ns(lease_ns, self.config.clock_drift_ppm);
        let fresh = self
            .configuration
            .indexes()
            .filter(|&replica| replica != self.index)
            .filter(|&replica| {
                let stamp = self.lease.granted.get(replica as usize).copied();
                stamp.is_some_and(|stamp| stamp != 0 && now < stamp.saturating_add(held))
            })
            .count();
        fresh >= self.faults_max()
    }

    /// A lease read (paper 6.3.1): answered from this primary's state under a lease,
    /// or `Behind` (the client then sends it through the log). A backup drops it, as it
    /// drops any request: the client's retry reaches the primary.
    pub(super) fn on_lease_read(&mut self, request: Request, effects: &mut Vec<Effect>) {
        if !self.is_primary() {
            if request.read_seen().is_none() {
                return self.drop_reason("lease_read", "no seen op in its body");
            }
            return self.drop_reason("lease_read", "not the primary");
        }
        let route = self.clients.input_route(request.client);
        let holds = self.holds_lease();
        self.answer_lease_read(request, holds, route, effects);
    }

    /// Whether the reply to a request of `operation` handed over now is made in that
    /// same input, if at all, so that it carries the input's route token: true of a
    /// lease read, which a primary answers at once (`Read` under the lease, else
    /// `Behind`), a retiring replica answers at once (`NewEpoch`), a request of an
    /// earlier epoch is answered at once, and anything else drops. A driver need not
    /// keep a route of its own for it (`replies_by_token` says the same of writes).
    pub fn replies_at_once(&self, operation: Operation) -> bool {
        operation == Operation::LeaseRead
    }

    /// The lease reads of one run of a client's batch (consecutive requests from one
    /// connection, so one route token), handed over as one input: what
    /// [`Replica::on_client_request`] does with each, with the lease judged once for the
    /// run. Nothing a lease read does changes what the lease rule reads (the clock
    /// reading, the stamps echoed, the commit number, the view, the status), so the rule
    /// gives the same answer for every read of the run, at the latest clock reading the
    /// driver passed (`set_monotonic_ns`, taken after the run arrived): the rule is the
    /// one `holds_lease` states, unchanged; only its evaluation is shared. Outside the
    /// case it covers (a normal primary, a read of its epoch), each read goes to
    /// `on_client_request` alone.
    pub fn on_lease_reads(
        &mut self,
        reads: impl Iterator<Item = Message>,
        route: Option<RouteToken>,
        effects: &mut Vec<Effect>,
    ) {
        let mut start = effects.len();
        // Judged once for the run: the same reading, the same stamps, the same commit.
        let mut holds = self.is_primary() && self.holds_lease();
        // Whether reads were answered since the last input ended.
        let mut answered = false;
        for message in reads {
            let fast = self.is_primary()
                && message.view <= VIEW_MAX
                && message.epoch == self.configuration.epoch();
            match message.body {
                // What `on_message` does with it: a normal primary hands a request of its
                // epoch to `on_request`, which hands a lease read to `on_lease_read`.
                Body::Request(request) if fast && request.operation == Operation::LeaseRead => {
                    debug_assert_eq!(holds, self.holds_lease(), "a lease read moved the rule");
                    self.answer_lease_read(request, holds, route, effects);
                    answered = true;
                }
                body => {
                    // The long way, as an input of its own; the rule is judged again after
                    // it. The reads before it close an input first, if there were any: an
                    // input with nothing in it would issue writes still pending from
                    // before the run (a restart's replay issues its own at its first
                    // input), which the driver captures from this replica only after the
                    // whole run, after the inputs that follow may have changed what they
                    // name (a checkpoint a StartEpoch then dropped: seed 16020265).
                    if std::mem::take(&mut answered) {
                        self.end_input(start, effects);
                    }
                    let message = Message { body, ..message };
                    self.on_client_request(message, route, effects);
                    start = effects.len();
                    holds = self.is_primary() && self.holds_lease();
                }
            }
        }
        self.end_input(start, effects);
    }

    /// Answers a lease read at the primary: from its state when `holds` (the lease rule,
    /// `holds_lease`, judged at the latest clock reading) and the session has seen no
    /// more than this primary committed; else `Behind`.
    fn answer_lease_read(
        &mut self,
        request: Request,
        holds: bool,
        route: Option<RouteToken>,
        effects: &mut Vec<Effect>,
    ) {
        debug_assert!(self.is_primary());
        let Some(seen) = request.read_seen() else {
            return self.drop_reason("lease_read", "no seen op in its body");
        };
        let (client, session, number) = (request.client, request.session, request.request);
        // A session never goes back in time: an answer older than what it has seen (it
        // read at a backup of a later view, say) goes through the log instead.
        if !holds || seen > self.commit {
            self.stats.lease_reads_fallen_back += 1;
            let reply = Reply {
                client,
                session,
                request: number,
                op: self.commit,
                status: ReplyStatus::Behind,
                result: Bytes::new(),
            };
            return self.reply_routed(reply, route, effects);
        }
        // Everything that completed anywhere was executed here (the module docs): the
        // state after `commit` is the latest.
        let reply = Reply {
            client,
            session,
            request: number,
            op: self.commit,
            status: ReplyStatus::Read,
            result: self.service.query(&request.read_query()),
        };
        self.stats.lease_reads_answered += 1;
        self.reply_routed(reply, route, effects);
    }

    /// Answers `reply.client` with `route`, the token of the request being answered.
    fn reply_routed(&self, reply: Reply, route: Option<RouteToken>, effects: &mut Vec<Effect>) {
        effects.push(Effect::Reply {
            client: reply.client,
            route,
            message: self.envelope(Body::Reply(reply)),
        });
    }

    /// What must hold between inputs.
    pub(super) fn lease_invariants(&self) {
        if self.is_primary() {
            // Sized for the configuration whenever the replica becomes normal in a view
            // (an epoch's members change only with the view they start in).
            assert_eq!(
                self.lease.granted.len(),
                self.configuration.replica_count() as usize
            );
            assert!(self.lease.view_start_ns <= self.lease.now_ns);
            assert!(self
                .lease
                .granted
                .iter()
                .all(|&stamp| stamp == 0 || stamp <= self.lease.now_ns));
            assert_eq!(
                self.lease.granted[self.index as usize], 0,
                "no lease from itself"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_shortens_what_is_held_and_stretches_what_is_waited() {
        assert_eq!(held_ns(1_000_000, 0), 1_000_000);
        assert_eq!(wait_ns(1_000_000, 0), 1_000_000);
        // 1%: held 1/1.01 * 0.99, waited 1.01/0.99.
        assert_eq!(held_ns(1_000_000, 10_000), 980_198);
        assert_eq!(wait_ns(1_000_000, 10_000), 1_020_203);
        // What is held, at the slowest primary clock, ends before the promise at the
        // fastest backup clock.
        let (lease, drift) = (500_000_000u64, 10_000u32);
        let real_held = held_ns(lease, drift) as f64 / 0.99;
        let real_promise = lease as f64 / 1.01;
        assert!(real_held <= real_promise);
        let real_wait = wait_ns(lease, drift) as f64 / 1.01;
        assert!(real_wait >= lease as f64 / 0.99);
    }
}
