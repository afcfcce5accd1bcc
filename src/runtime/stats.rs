//! The stats reply's expensive half, cached: rendering the histograms scans their buckets
//! (tens of microseconds each), so a burst of stats requests must not render them once per
//! request. The loop publishes a rendering at most every [`HISTOGRAMS_REFRESH`]; the cheap
//! half (status, view, op, commit, counters) is read fresh for every reply.

use super::metrics::Metrics;
use crate::client::HistogramSummary;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The oldest histogram rendering a stats reply may carry.
pub const HISTOGRAMS_REFRESH: Duration = Duration::from_millis(100);

/// The latest rendering of the histograms and when it was made.
#[derive(Debug, Default)]
pub struct StatsCache {
    histograms: BTreeMap<String, HistogramSummary>,
    rendered_at: Option<Instant>,
}

impl StatsCache {
    /// The histograms' summaries, made again if the cached ones are older than
    /// [`HISTOGRAMS_REFRESH`].
    pub fn histograms(
        &mut self,
        metrics: &Metrics,
        now: Instant,
    ) -> &BTreeMap<String, HistogramSummary> {
        let fresh = self
            .rendered_at
            .is_some_and(|at| now.saturating_duration_since(at) < HISTOGRAMS_REFRESH);
        if !fresh {
            self.histograms = metrics.histogram_summaries();
            self.rendered_at = Some(now);
        }
        &self.histograms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_at_most_once_per_refresh() {
        let mut metrics = Metrics::default();
        let mut cache = StatsCache::default();
        let start = Instant::now();
        let first = cache.histograms(&metrics, start).clone();
        metrics.batch_entries.record(7);
        assert_eq!(cache.histograms(&metrics, start), &first);
        let later = start + HISTOGRAMS_REFRESH;
        assert_ne!(cache.histograms(&metrics, later), &first);
    }
}
