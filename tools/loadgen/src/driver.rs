//! The load loops. Closed loop: every session keeps one operation in flight, latency from
//! its submission. Open loop: operation i is due at `start + i / rate`; it is sent on the
//! next idle session once due, and its latency counts from the due time, not the send
//! time, so a stalled system is charged for the operations it delayed (the
//! coordinated-omission correction, as wrk2 does). The service time (from the actual send)
//! is recorded beside it, and so is every wait for an idle session: that wait is the
//! generator's limit (too few sessions for rate × latency), not the cluster's. Only
//! completions inside the measured window (after the warmup) are recorded.
//!
//! Every reply is checked against what its operation allows ([`reply::check`]): the first
//! one that does not fit ends the run with an error naming the cause, and so does a run of
//! failures with no success between them ([`failed_in_a_row_max`]).

use crate::reply::{self, Expect};
use crate::stop;
use crate::transport::{Done, Transport};
use crate::workload::Workload;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Latencies are recorded in microseconds, from 1 us to 100 s at 3 significant digits.
pub const LATENCY_US_MAX: u64 = 100_000_000;

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// How to drive the load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Sessions used (the closed loop's concurrency; the open loop's cap on it).
    pub sessions: usize,
    /// Open loop rate in operations per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Unrecorded time before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Print a progress line per second to stderr.
    pub progress: bool,
    /// Prefix of progress lines.
    pub label: String,
    /// Check every reply against its operation (false for the baseline, which answers
    /// nothing of the service).
    pub check_replies: bool,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Operations completed successfully in the window.
    pub ops: u64,
    /// Operations that completed with an error in the window.
    pub errors: u64,
    /// The window's errors by kind (`timeout`, `evicted`, ...).
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub seconds: f64,
    /// Latencies of the successful operations, in microseconds: from the intended send
    /// time in the open loop (corrected), from the send in the closed loop.
    pub histogram: Histogram<u64>,
    /// Service times of the successful operations (from the actual send: uncorrected),
    /// in microseconds. The same as `histogram` in the closed loop.
    pub service_histogram: Histogram<u64>,
    /// Open loop: operations that were due but never sent, because every session was busy.
    pub unsent: u64,
    /// Open loop: operations due in the window that found no idle session when due.
    pub session_waits: u64,
    /// Open loop: the longest an operation due in the window waited to be sent, us.
    pub send_wait_max_us: u64,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
}

impl Measurement {
    /// Completed operations (successes and errors) per second of the window.
    pub fn completions_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            (self.ops + self.errors) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Failures in a row, with no success between them, that end a run: every session's
/// operation failed (up to 64 sessions), and at least 3, so that a single timed-out
/// operation of a one-session run is not taken for a dead cluster.
pub fn failed_in_a_row_max(sessions: usize) -> u64 {
    sessions.clamp(3, 64) as u64
}

/// When an operation was meant to go out and when it did, in nanoseconds since the
/// window's start: a latency is then one subtraction, where two `Instant` differences per
/// completion showed in the generator's profile (`perf/profile.md`).
#[derive(Clone, Copy, Debug)]
struct Sent {
    intended_ns: u64,
    actual_ns: u64,
    expect: Expect,
}

struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// `measure_from` and `end` in nanoseconds since `start`.
    measure_from_ns: u64,
    end_ns: u64,
    check_replies: bool,
    /// Open loop: the service time differs from the latency and has a histogram of its
    /// own. In the closed loop they are the same numbers: recorded once, copied at the end.
    separate_service: bool,
    histogram: Histogram<u64>,
    service_histogram: Histogram<u64>,
    warmup_histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    errors_by_kind: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    /// Failures since the last success (or the start).
    failed_in_a_row: u64,
    failed_in_a_row_max: u64,
    session_waits: u64,
    send_wait_max_us: u64,
    progress: Progress,
}

impl Window {
    fn new(spec: &LoadSpec) -> Window {
        let start = Instant::now();
        let measure_from = start + spec.warmup;
        Window {
            start,
            measure_from,
            end: measure_from + spec.duration,
            measure_from_ns: nanos(spec.warmup),
            end_ns: nanos(spec.warmup + spec.duration),
            check_replies: spec.check_replies,
            separate_service: spec.rate.is_some(),
            histogram: new_histogram(),
            service_histogram: new_histogram(),
            warmup_histogram: new_histogram(),
            ops: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            first_error: None,
            failed_in_a_row: 0,
            failed_in_a_row_max: failed_in_a_row_max(spec.sessions),
            session_waits: 0,
            send_wait_max_us: 0,
            progress: Progress::new(spec, start),
        }
    }

    fn measured(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }

    /// `at` in nanoseconds since the start.
    fn ns(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.start))
    }

    /// Records one completion seen at `now_ns` of the operation `sent`. An error if the
    /// reply does not fit the operation, or if every operation is failing: the run must end.
    fn record(&mut self, done: &Done, sent: Sent, now_ns: u64) -> anyhow::Result<()> {
        let measured = now_ns >= self.measure_from_ns && now_ns < self.end_ns;
        self.progress.completed += 1;
        match &done.result {
            Ok(reply) => {
                if self.check_replies {
                    reply::check(sent.expect, reply)
                        .map_err(|why| anyhow::anyhow!("wrong reply: {why}"))?;
                }
                self.failed_in_a_row = 0;
                let latency_us = micros_between(sent.intended_ns, now_ns);
                if measured {
                    self.ops += 1;
                    self.histogram.saturating_record(latency_us);
                    if self.separate_service {
                        let service_us = micros_between(sent.actual_ns, now_ns);
                        self.service_histogram.saturating_record(service_us);
                    }
                } else {
                    self.warmup_histogram.saturating_record(latency_us);
                }
            }
            Err(error) => {
                self.progress.errors += 1;
                if measured {
                    self.errors += 1;
                    *self.errors_by_kind.entry(error.kind).or_insert(0) += 1;
                }
                self.first_error
                    .get_or_insert_with(|| error.message.clone());
                self.failed_in_a_row += 1;
                if self.failed_in_a_row >= self.failed_in_a_row_max {
                    let first = match self.first_error.as_deref() {
                        Some(first) if first != error.message => {
                            format!("; the first of the run: {first}")
                        }
                        _ => String::new(),
                    };
                    anyhow::bail!(
                        "every operation is failing: the last {} all failed and none \
                         succeeded (the latest: {}: {}{first}); the cluster is not serving \
                         this load (down, without a quorum, or refusing it)",
                        self.failed_in_a_row,
                        error.kind,
                        error.message,
                    );
                }
            }
        }
        Ok(())
    }

    /// Records that an operation due at `due` was sent at `now`, and whether it had to
    /// wait for an idle session.
    fn record_send(&mut self, due: Instant, now: Instant, waited_for_session: bool) {
        if !self.measured(due) {
            return;
        }
        if waited_for_session {
            self.session_waits += 1;
        }
        let wait_us = now.saturating_duration_since(due).as_micros() as u64;
        self.send_wait_max_us = self.send_wait_max_us.max(wait_us);
    }

    fn tick(&mut self, now: Instant) {
        let histogram = if now >= self.measure_from {
            &self.histogram
        } else {
            &self.warmup_histogram
        };
        self.progress
            .maybe_print(now, now < self.measure_from, histogram);
    }

    fn finish(mut self, unsent: u64) -> Measurement {
        if !self.separate_service {
            self.service_histogram = self.histogram.clone();
        }
        let now = Instant::now();
        let interrupted = stop::requested();
        let seconds = now
            .min(self.end)
            .saturating_duration_since(self.measure_from)
            .as_secs_f64();
        Measurement {
            ops: self.ops,
            errors: self.errors,
            errors_by_kind: self.errors_by_kind,
            first_error: self.first_error,
            seconds,
            histogram: self.histogram,
            service_histogram: self.service_histogram,
            unsent,
            session_waits: self.session_waits,
            send_wait_max_us: self.send_wait_max_us,
            interrupted,
        }
    }
}

/// Microseconds from `from_ns` to `to_ns` (at least 1, the histogram's lowest value).
fn micros_between(from_ns: u64, to_ns: u64) -> u64 {
    (to_ns.saturating_sub(from_ns) / 1000).max(1)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One progress line per second: completions in the last second, latency so far.
struct Progress {
    enabled: bool,
    label: String,
    start: Instant,
    next_print: Instant,
    completed: u64,
    errors: u64,
    completed_at_last_print: u64,
    last_print: Instant,
}

impl Progress {
    fn new(spec: &LoadSpec, start: Instant) -> Progress {
        Progress {
            enabled: spec.progress,
            label: spec.label.clone(),
            start,
            next_print: start + Duration::from_secs(1),
            completed: 0,
            errors: 0,
            completed_at_last_print: 0,
            last_print: start,
        }
    }

    fn maybe_print(&mut self, now: Instant, warming_up: bool, histogram: &Histogram<u64>) {
        if !self.enabled || now < self.next_print {
            return;
        }
        let interval = now.duration_since(self.last_print).as_secs_f64();
        let rate = (self.completed - self.completed_at_last_print) as f64 / interval;
        eprintln!(
            "[{}{:5.1}s] {:>10.0} ops/s  p50 {:>7} us  p99 {:>7} us  errors {}{}",
            self.label,
            now.duration_since(self.start).as_secs_f64(),
            rate,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            self.errors,
            if warming_up { "  (warmup)" } else { "" },
        );
        self.completed_at_last_print = self.completed;
        self.last_print = now;
        while self.next_print <= now {
            self.next_print += Duration::from_secs(1);
        }
    }
}

/// Runs the load `spec` describes over `transport` and returns what it measured.
pub fn run(
    transport: &mut dyn Transport,
    workload: &mut Workload,
    spec: &LoadSpec,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(spec.sessions > 0, "a load run needs at least one session");
    match spec.rate {
        None => closed_loop(transport, workload, spec),
        Some(rate) => open_loop(transport, workload, spec, rate),
    }
}

/// How long one poll may wait at most: keeps progress lines and the stop flag responsive.
const POLL_SLICE: Duration = Duration::from_millis(50);

fn closed_loop(
    transport: &mut dyn Transport,
    workload: &mut Workload,
    spec: &LoadSpec,
) -> anyhow::Result<Measurement> {
    let mut window = Window::new(spec);
    let mut sent = Vec::with_capacity(spec.sessions);
    for session in 0..spec.sessions {
        let (operation, expect) = workload.next_operation();
        transport.submit(session, operation)?;
        let now_ns = window.ns(Instant::now());
        sent.push(Sent {
            intended_ns: now_ns,
            actual_ns: now_ns,
            expect,
        });
    }
    // The clock reading of the latest completions, and it in nanoseconds since the start:
    // every completion of a pass comes with the same reading.
    let mut read_at = (window.start, 0);
    loop {
        let now = Instant::now();
        if now >= window.end || stop::requested() {
            break;
        }
        let timeout = (window.end - now).min(POLL_SLICE);
        // Each completion is recorded and its session given its next operation as the
        // transport finds it (`Transport::poll_each`).
        let mut on_done = |completion: Done, at: Instant| {
            if at != read_at.0 {
                read_at = (at, window.ns(at));
            }
            let at_ns = read_at.1;
            window.record(&completion, sent[completion.session], at_ns)?;
            if at >= window.end {
                return Ok(None);
            }
            let (operation, expect) = workload.next_operation();
            sent[completion.session] = Sent {
                intended_ns: at_ns,
                actual_ns: at_ns,
                expect,
            };
            Ok(Some(operation))
        };
        transport.poll_each(timeout, &mut on_done)?;
        window.tick(Instant::now());
    }
    Ok(window.finish(0))
}

fn open_loop(
    transport: &mut dyn Transport,
    workload: &mut Workload,
    spec: &LoadSpec,
    rate: f64,
) -> anyhow::Result<Measurement> {
    let mut window = Window::new(spec);
    let interval_s = 1.0 / rate;
    let due =
        |start: Instant, index: u64| start + Duration::from_secs_f64(index as f64 * interval_s);
    let mut next_index: u64 = 0;
    let mut sent = vec![
        Sent {
            intended_ns: 0,
            actual_ns: 0,
            expect: Expect::Anything,
        };
        spec.sessions
    ];
    // Idle sessions, a stack: bounded by `sessions` by construction.
    let mut idle: Vec<usize> = (0..spec.sessions).rev().collect();
    // Operations below this index were due at a moment when every session was busy.
    let mut waited_below: u64 = 0;
    let mut done = Vec::with_capacity(spec.sessions);
    loop {
        let now = Instant::now();
        if now >= window.end || stop::requested() {
            break;
        }
        while due(window.start, next_index) <= now {
            let Some(session) = idle.pop() else {
                // Everything due by now waits for a session.
                let due_now = (now.duration_since(window.start).as_secs_f64() * rate) as u64;
                waited_below = waited_below.max(due_now + 1);
                break;
            };
            let intended = due(window.start, next_index);
            let (operation, expect) = workload.next_operation();
            transport.submit(session, operation)?;
            let actual = Instant::now();
            window.record_send(intended, actual, next_index < waited_below);
            sent[session] = Sent {
                intended_ns: window.ns(intended),
                actual_ns: window.ns(actual),
                expect,
            };
            next_index += 1;
        }
        let next_due = due(window.start, next_index);
        let wait = if idle.is_empty() {
            POLL_SLICE
        } else {
            next_due.saturating_duration_since(now)
        };
        transport.poll(&mut done, wait.min(POLL_SLICE).min(window.end - now))?;
        let now = Instant::now();
        let now_ns = window.ns(now);
        for completion in done.drain(..) {
            window.record(&completion, sent[completion.session], now_ns)?;
            idle.push(completion.session);
        }
        window.tick(now);
    }
    // Operations that were due, found every session busy, and were never sent (those
    // that fell due as the window closed were not refused a session: they are not counted).
    Ok(window.finish(waited_below.saturating_sub(next_index)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServiceKind;
    use crate::transport::fake::{empty, Delayed};
    use crate::transport::OpError;
    use bytes::Bytes;
    use vsr::service::{Kv, StateMachine};

    fn spec(sessions: usize, rate: Option<f64>) -> LoadSpec {
        LoadSpec {
            sessions,
            rate,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            progress: false,
            label: String::new(),
            check_replies: true,
        }
    }

    fn null_workload() -> Workload {
        Workload::new(ServiceKind::Null, 8, 0.0, 1, 1)
    }

    #[test]
    fn closed_loop_latency_is_the_service_time() {
        let mut transport = Delayed::new(Duration::from_millis(5));
        let m = run(&mut transport, &mut null_workload(), &spec(4, None)).unwrap();
        assert!(m.ops > 50, "ops {}", m.ops);
        assert!(m.histogram.value_at_quantile(0.5) >= 5_000);
        assert!(m.histogram.value_at_quantile(0.5) < 50_000);
        assert_eq!(m.histogram.len(), m.service_histogram.len());
        assert_eq!(m.session_waits, 0);
    }

    #[test]
    fn open_loop_charges_queueing_to_latency_and_to_the_generator() {
        // One session served in 20 ms can do 50 ops/s; asking for 200 ops/s must show
        // latencies growing far beyond the 20 ms service time (coordinated omission), while
        // the service time stays 20 ms and the waits are the generator's (one session).
        let mut transport = Delayed::new(Duration::from_millis(20));
        let m = run(&mut transport, &mut null_workload(), &spec(1, Some(200.0))).unwrap();
        assert!(m.histogram.max() > 100_000, "max {}", m.histogram.max());
        assert!(m.unsent > 0);
        let service_p99 = m.service_histogram.value_at_quantile(0.99);
        assert!((20_000..60_000).contains(&service_p99), "{service_p99}");
        assert!(m.session_waits > 0);
        assert!(m.send_wait_max_us > 100_000, "{}", m.send_wait_max_us);
    }

    #[test]
    fn open_loop_with_enough_sessions_never_waits_for_one() {
        // 200 ops/s at 20 ms needs 4 sessions in flight on average; 32 are plenty.
        let mut transport = Delayed::new(Duration::from_millis(20));
        let m = run(&mut transport, &mut null_workload(), &spec(32, Some(200.0))).unwrap();
        assert_eq!(m.session_waits, 0);
        assert_eq!(m.unsent, 0);
        assert!(m.histogram.value_at_quantile(0.99) < 60_000);
    }

    #[test]
    fn a_reply_of_another_service_ends_the_run() {
        // A kv cluster answers a null payload with kv's `invalid operation` result.
        fn kv(_: u64, operation: &Bytes) -> Result<Bytes, OpError> {
            Ok(Kv::default().apply(1, 0, operation))
        }
        let mut transport = Delayed::new(Duration::from_millis(1)).answering(kv);
        let started = Instant::now();
        let error = run(&mut transport, &mut null_workload(), &spec(4, None)).unwrap_err();
        assert!(error.to_string().contains("runs the kv service"), "{error}");
        assert!(started.elapsed() < Duration::from_millis(200));
        // The baseline answers nothing of the service: its replies are not checked.
        let mut transport = Delayed::new(Duration::from_millis(1)).answering(kv);
        let unchecked = LoadSpec {
            check_replies: false,
            ..spec(4, None)
        };
        assert!(run(&mut transport, &mut null_workload(), &unchecked).is_ok());
    }

    fn timeout(_: u64, _: &Bytes) -> Result<Bytes, OpError> {
        Err(OpError {
            kind: "timeout",
            message: "the request timed out".to_string(),
        })
    }

    #[test]
    fn every_operation_failing_ends_the_run() {
        let mut transport = Delayed::new(Duration::from_millis(1)).answering(timeout);
        let started = Instant::now();
        let error = run(&mut transport, &mut null_workload(), &spec(8, None)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("every operation is failing"), "{text}");
        assert!(text.contains("last 8 all failed"), "{text}");
        assert!(text.contains("timeout: the request timed out"), "{text}");
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn some_failures_are_counted_by_kind() {
        fn every_fifth_fails(n: u64, operation: &Bytes) -> Result<Bytes, OpError> {
            if n % 5 == 4 {
                timeout(n, operation)
            } else {
                empty(n, operation)
            }
        }
        let mut transport = Delayed::new(Duration::from_millis(2)).answering(every_fifth_fails);
        let m = run(&mut transport, &mut null_workload(), &spec(4, None)).unwrap();
        assert!(m.errors > 0 && m.ops > m.errors, "{} / {}", m.errors, m.ops);
        assert_eq!(m.errors_by_kind.get("timeout"), Some(&m.errors));
        assert_eq!(m.first_error.as_deref(), Some("the request timed out"));
    }
}
