//! Open-loop session sizing (`--rate` without `--sessions`). An open loop needs, by Little's
//! law, about rate × service time sessions in flight; too few and operations wait for an
//! idle session, which is the generator's limit and must not be reported as the cluster's.
//! The service time is unknown until measured, and it grows with load, so sizing is
//! empirical: trial runs at the target rate, doubling the sessions while operations wait,
//! until none waits (the generator keeps the rate), until doubling no longer raises
//! throughput by [`RISE_MIN`] (then the cluster, not the generator, is behind the rate), or
//! until [`SESSIONS_AUTO_MAX`].

use crate::driver::{self, LoadSpec};
use crate::stop;
use crate::system::Shape;
use crate::transport::Transport;
use crate::workload::Workload;
use std::time::Duration;

/// Doubling the sessions must raise throughput by this fraction for the generator, not
/// the cluster, to count as the limit.
pub const RISE_MIN: f64 = 0.05;

/// Open-loop sessions are sized automatically up to this many.
pub const SESSIONS_AUTO_MAX: usize = 4096;

/// The shortest trial (the warmup's length when it is longer).
pub const TRIAL_MIN: Duration = Duration::from_millis(500);

/// Opens a client with this many sessions.
pub type Connect<'a> = dyn FnMut(usize) -> anyhow::Result<Box<dyn Transport>> + 'a;

/// Sizes the sessions of `spec` (starting from `spec.sessions`) for `rate`, with trials of
/// `trial` each on a fresh client from `connect`. Returns the sessions and, if the cluster
/// is what falls behind, why; `connections` is left for the caller.
pub fn size_open_loop(
    spec: &LoadSpec,
    rate: f64,
    trial: Duration,
    workload: &mut Workload,
    connect: &mut Connect,
) -> anyhow::Result<Shape> {
    let mut shape = Shape {
        sessions: spec.sessions,
        sessions_auto: true,
        ..Shape::default()
    };
    let mut previous: Option<(usize, f64)> = None;
    loop {
        let mut transport = connect(shape.sessions)?;
        let trial_spec = LoadSpec {
            sessions: shape.sessions,
            rate: Some(rate),
            warmup: Duration::ZERO,
            duration: trial,
            progress: false,
            ..spec.clone()
        };
        let m = driver::run(transport.as_mut(), workload, &trial_spec)?;
        let kept = m.session_waits == 0 && m.unsent == 0;
        if kept || shape.sessions >= SESSIONS_AUTO_MAX || stop::requested() {
            return Ok(shape);
        }
        let achieved = m.completions_per_sec();
        if let Some((sessions_before, achieved_before)) = previous {
            if achieved < achieved_before * (1.0 + RISE_MIN) {
                shape.cluster_behind = Some(format!(
                    "doubling the sessions from {sessions_before} to {} raised throughput \
                     only from {achieved_before:.0} to {achieved:.0} ops/s",
                    shape.sessions
                ));
                return Ok(shape);
            }
        }
        let next = (shape.sessions * 2).min(SESSIONS_AUTO_MAX);
        if spec.progress {
            eprintln!(
                "vsr-load: {} sessions cannot keep {rate} ops/s ({} operations waited for an \
                 idle session, {achieved:.0} ops/s done); trying {next}",
                shape.sessions, m.session_waits
            );
        }
        previous = Some((shape.sessions, achieved));
        shape.sessions = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServiceKind;
    use crate::transport::fake::Delayed;

    fn spec(sessions: usize) -> LoadSpec {
        LoadSpec {
            sessions,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            progress: false,
            label: String::new(),
            check_replies: true,
        }
    }

    /// Sizes for `rate` against transports of `server`, returning the shape and the
    /// session counts tried.
    fn size(rate: f64, server: fn() -> Delayed) -> (Shape, Vec<usize>) {
        let mut tried = Vec::new();
        let mut connect = |sessions: usize| -> anyhow::Result<Box<dyn Transport>> {
            tried.push(sessions);
            Ok(Box::new(server()))
        };
        let mut workload = Workload::new(ServiceKind::Null, 8, 0.0, 1, 1);
        let trial = Duration::from_millis(300);
        let shape = size_open_loop(&spec(2), rate, trial, &mut workload, &mut connect).unwrap();
        (shape, tried)
    }

    #[test]
    fn sessions_double_until_the_rate_is_kept() {
        // 400 ops/s at 20 ms needs 8 in flight on average: 2 and 4 are too few; 8 is just
        // enough when the timing is exact, so 16 may be needed.
        let (shape, tried) = size(400.0, || Delayed::new(Duration::from_millis(20)));
        assert_eq!(tried[..3], [2, 4, 8]);
        assert!([8, 16].contains(&shape.sessions), "{shape:?}");
        assert!(shape.sessions_auto);
        assert_eq!(shape.cluster_behind, None);
    }

    #[test]
    fn a_saturated_server_is_the_clusters_limit() {
        // One operation at a time, 10 ms each: 100 ops/s whatever the sessions.
        let (shape, tried) = size(400.0, || {
            Delayed::new(Duration::from_millis(10)).one_at_a_time()
        });
        assert_eq!(tried, [2, 4]);
        let why = shape.cluster_behind.expect("the cluster is behind");
        assert!(why.contains("from 2 to 4"), "{why}");
    }
}
