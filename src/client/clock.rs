//! A cheap monotonic clock for operation deadlines.
//!
//! Every submitted operation gets a deadline, so a precise clock read per operation
//! (`Instant::now`, a `rdtsc` through the vDSO) showed as 7% of the load generator's
//! samples at 4096 sessions (`perf/profile.md`). Deadlines are `request_timeout` long
//! (seconds) and checked once per tick (10 ms), so the coarse monotonic clock, which
//! the kernel updates every scheduler tick (1-4 ms) and the vDSO reads without `rdtsc`,
//! is precise enough.

use std::time::Duration;

/// Time on `CLOCK_MONOTONIC_COARSE`, from an arbitrary start: only differences and
/// comparisons mean anything.
pub(crate) fn coarse_now() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec; clock_gettime writes only it.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut time) };
    assert_eq!(
        result, 0,
        "CLOCK_MONOTONIC_COARSE is always available on Linux"
    );
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// How far `coarse_now` may lag the precise clock: its resolution (one scheduler tick). A
/// deadline of `coarse_now() + timeout + coarse_resolution()` never passes early.
pub(crate) fn coarse_resolution() -> Duration {
    let mut resolution = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `resolution` is a valid, writable timespec; clock_getres writes only it.
    let result = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) };
    assert_eq!(
        result, 0,
        "CLOCK_MONOTONIC_COARSE is always available on Linux"
    );
    Duration::new(resolution.tv_sec as u64, resolution.tv_nsec as u32)
}

/// How far `coarse_now` may lag the precise clock, with margin. One scheduler tick in
/// principle (`coarse_resolution`); but a CPU that idles without ticks updates the coarse
/// time only when it wakes, and `tests/kv_process.rs` saw a 2 s deadline pass 0.9 ms
/// early with one tick (4 ms) of margin. Two ticks and a millisecond: a deadline late by
/// at most ~10 ms costs nothing, one early breaks the client's contract.
pub(crate) fn coarse_lag_max() -> Duration {
    coarse_resolution() * 2 + Duration::from_millis(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coarse_deadline_never_passes_early() {
        let timeout = Duration::from_millis(15);
        let real = std::time::Instant::now();
        let deadline = coarse_now() + timeout + coarse_resolution();
        while coarse_now() < deadline {}
        assert!(real.elapsed() >= timeout, "{:?}", real.elapsed());
    }

    #[test]
    fn coarse_time_never_goes_back_and_follows_real_time() {
        let start = coarse_now();
        let real = std::time::Instant::now();
        let mut last = start;
        // It advances with real time, never backwards. How far it lags depends on the
        // scheduler (more than a tick on a loaded machine with tickless idle CPUs), so the
        // bound here is generous: a clock that stopped would fail it, a late one not.
        while last - start < Duration::from_millis(20) {
            let now = coarse_now();
            assert!(now >= last, "the coarse clock went back");
            last = now;
            assert!(
                real.elapsed() < Duration::from_secs(5),
                "the coarse clock advanced only {:?} in 5 s",
                last - start
            );
        }
    }
}
