//! HdrHistogram's percentile-distribution text format (`.hgrm`), as Java's
//! `Histogram.outputPercentileDistribution(out, 5, 1000.0)` writes it: values recorded in
//! microseconds are printed in milliseconds, five percentile ticks per half distance, so
//! the file loads into the usual HdrHistogram plotters.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Ticks per half distance to 100%, Java's default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The `.hgrm` text of `histogram` (values divided by `scale`, e.g. 1000.0 for us → ms).
pub fn percentile_distribution(histogram: &Histogram<u64>, scale: f64) -> String {
    let digits = histogram.sigfig() as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total: u64 = 0;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / scale;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let inverse = 1.0 / (1.0 - quantile);
                let _ = writeln!(
                    out,
                    "{value:12.digits$} {quantile:2.12} {total:10} {inverse:14.2}"
                );
            } else {
                let _ = writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}");
            }
        }
    }
    let mean = if histogram.is_empty() {
        0.0
    } else {
        histogram.mean() / scale
    };
    let stdev = if histogram.is_empty() {
        0.0
    } else {
        histogram.stdev() / scale
    };
    let max = histogram.max() as f64 / scale;
    let sub_buckets = (2 * 10u64.pow(digits as u32)).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        histogram.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_has_header_rows_and_footer() {
        let mut histogram = crate::driver::new_histogram();
        for value in 1..=1000u64 {
            histogram.record(value).unwrap();
        }
        let text = percentile_distribution(&histogram, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert!(
            lines[2].trim_start().starts_with("0.001 0.000000000000"),
            "{}",
            lines[2]
        );
        let last_row = lines[lines.len() - 4];
        assert!(last_row.contains("1.000000000000"), "{last_row}");
        assert!(last_row.trim_end().ends_with("1000"), "{last_row}");
        assert!(lines[lines.len() - 2]
            .starts_with("#[Max     =        1.000, Total count    =         1000]"));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
    }
}
