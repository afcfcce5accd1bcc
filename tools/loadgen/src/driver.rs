//! The load loops. Closed loop: every session keeps one operation in flight, latency from
//! its submission. Open loop: operation i is due at `start + i / rate`; it is sent on the
//! next idle session once due, and its latency counts from the due time, not the send
//! time, so a stalled system is charged for the operations it delayed (the
//! coordinated-omission correction). Only completions inside the measured window (after
//! the warmup) are recorded.

use crate::stop;
use crate::transport::{Done, Transport};
use crate::workload::Workload;
use hdrhistogram::Histogram;
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
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Operations completed successfully in the window.
    pub ops: u64,
    /// Operations that completed with an error in the window.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub seconds: f64,
    /// Latencies of the successful operations, in microseconds.
    pub histogram: Histogram<u64>,
    /// Open loop: operations that were due but never sent (the system fell behind).
    pub unsent: u64,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
}

struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    histogram: Histogram<u64>,
    warmup_histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
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
            histogram: new_histogram(),
            warmup_histogram: new_histogram(),
            ops: 0,
            errors: 0,
            first_error: None,
            progress: Progress::new(spec, start),
        }
    }

    /// Records one completion seen at `now` of an operation whose latency counts from `since`.
    fn record(&mut self, done: &Done, since: Instant, now: Instant) {
        let measured = now >= self.measure_from && now < self.end;
        self.progress.completed += 1;
        match &done.result {
            Ok(_) => {
                let latency_us = now.saturating_duration_since(since).as_micros().max(1) as u64;
                if measured {
                    self.ops += 1;
                    self.histogram.saturating_record(latency_us);
                } else {
                    self.warmup_histogram.saturating_record(latency_us);
                }
            }
            Err(error) => {
                self.progress.errors += 1;
                if measured {
                    self.errors += 1;
                }
                self.first_error.get_or_insert_with(|| error.clone());
            }
        }
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

    fn finish(self, unsent: u64) -> Measurement {
        let now = Instant::now();
        let interrupted = stop::requested();
        let seconds = now
            .min(self.end)
            .saturating_duration_since(self.measure_from)
            .as_secs_f64();
        Measurement {
            ops: self.ops,
            errors: self.errors,
            first_error: self.first_error,
            seconds,
            histogram: self.histogram,
            unsent,
            interrupted,
        }
    }
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
    let mut sent_at = vec![window.start; spec.sessions];
    for (session, sent) in sent_at.iter_mut().enumerate() {
        transport.submit(session, workload.next_operation())?;
        *sent = Instant::now();
    }
    let mut done = Vec::with_capacity(spec.sessions);
    loop {
        let now = Instant::now();
        if now >= window.end || stop::requested() {
            break;
        }
        transport.poll(&mut done, (window.end - now).min(POLL_SLICE))?;
        let now = Instant::now();
        for completion in done.drain(..) {
            window.record(&completion, sent_at[completion.session], now);
            if now < window.end {
                transport.submit(completion.session, workload.next_operation())?;
                sent_at[completion.session] = now;
            }
        }
        window.tick(now);
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
    let mut intended_at = vec![window.start; spec.sessions];
    // Idle sessions, a stack: bounded by `sessions` by construction.
    let mut idle: Vec<usize> = (0..spec.sessions).rev().collect();
    let mut done = Vec::with_capacity(spec.sessions);
    loop {
        let now = Instant::now();
        if now >= window.end || stop::requested() {
            break;
        }
        while !idle.is_empty() && due(window.start, next_index) <= now {
            let session = idle.pop().expect("idle is not empty");
            transport.submit(session, workload.next_operation())?;
            intended_at[session] = due(window.start, next_index);
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
        for completion in done.drain(..) {
            window.record(&completion, intended_at[completion.session], now);
            idle.push(completion.session);
        }
        window.tick(now);
    }
    // Operations due by the end of the window that never got a session.
    let end = Instant::now().min(window.end);
    let due_total = (end.saturating_duration_since(window.start).as_secs_f64() * rate) as u64;
    Ok(window.finish(due_total.saturating_sub(next_index)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServiceKind;
    use bytes::Bytes;
    use std::collections::VecDeque;

    /// A transport that completes every operation `delay` after it was submitted.
    struct Delayed {
        delay: Duration,
        in_flight: VecDeque<(Instant, usize)>,
    }

    impl Transport for Delayed {
        fn submit(&mut self, session: usize, _operation: Bytes) -> anyhow::Result<()> {
            self.in_flight
                .push_back((Instant::now() + self.delay, session));
            Ok(())
        }

        fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()> {
            let deadline = Instant::now() + timeout;
            if let Some(&(ready, _)) = self.in_flight.front() {
                std::thread::sleep(
                    ready
                        .min(deadline)
                        .saturating_duration_since(Instant::now()),
                );
            } else {
                std::thread::sleep(timeout);
            }
            while let Some(&(ready, session)) = self.in_flight.front() {
                if ready > Instant::now() {
                    break;
                }
                self.in_flight.pop_front();
                done.push(Done {
                    session,
                    result: Ok(Bytes::new()),
                });
            }
            Ok(())
        }
    }

    fn spec(sessions: usize, rate: Option<f64>) -> LoadSpec {
        LoadSpec {
            sessions,
            rate,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            progress: false,
            label: String::new(),
        }
    }

    #[test]
    fn closed_loop_latency_is_the_service_time() {
        let mut transport = Delayed {
            delay: Duration::from_millis(5),
            in_flight: VecDeque::new(),
        };
        let mut workload = Workload::new(ServiceKind::Null, 8, 0.0, 1, 1);
        let m = run(&mut transport, &mut workload, &spec(4, None)).unwrap();
        assert!(m.ops > 50, "ops {}", m.ops);
        assert!(m.histogram.value_at_quantile(0.5) >= 5_000);
        assert!(m.histogram.value_at_quantile(0.5) < 50_000);
    }

    #[test]
    fn open_loop_charges_queueing_to_latency() {
        // One session served in 20 ms can do 50 ops/s; asking for 200 ops/s must show
        // latencies growing far beyond the 20 ms service time (coordinated omission).
        let mut transport = Delayed {
            delay: Duration::from_millis(20),
            in_flight: VecDeque::new(),
        };
        let mut workload = Workload::new(ServiceKind::Null, 8, 0.0, 1, 1);
        let m = run(&mut transport, &mut workload, &spec(1, Some(200.0))).unwrap();
        assert!(m.histogram.max() > 100_000, "max {}", m.histogram.max());
        assert!(m.unsent > 0);
    }
}
