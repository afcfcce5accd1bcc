//! `--sweep`: closed-loop levels of rising concurrency (sessions 1, 2, 4, … up to
//! `--sweep-sessions-max`, connections `min(sessions, --connections)`) against one cluster,
//! each for `--duration` after `--warmup`. Stops when throughput has not risen by
//! `RISE_MIN` over the best level for `PLATEAU_LEVELS` levels in a row, or when p99 exceeds
//! `LATENCY_BLOWUP` times the first level's. Writes a CSV and an SVG throughput/latency
//! plot, and prints the knee: the level of highest power (throughput / mean latency,
//! Kleinrock's definition of the optimal operating point).

use crate::cli::LoadArgs;
use crate::driver::{self, LoadSpec};
use crate::output;
use crate::report::Summary;
use crate::stop;
use crate::system::{Shape, System, Target};
use crate::workload::Workload;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Throughput must grow by this fraction over the best level to count as rising.
const RISE_MIN: f64 = 0.05;
/// Levels in a row without a rise that end the sweep.
const PLATEAU_LEVELS: usize = 2;
/// p99 beyond this multiple of the first level's p99 ends the sweep.
const LATENCY_BLOWUP: f64 = 50.0;

/// One level's result.
#[derive(Clone, Debug)]
pub struct Level {
    /// Sessions of the level.
    pub sessions: usize,
    /// Connections of the level.
    pub connections: usize,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Mean latency, us.
    pub mean_us: f64,
    /// Latency percentiles, us.
    pub p50_us: u64,
    /// p90, us.
    pub p90_us: u64,
    /// p99, us.
    pub p99_us: u64,
    /// p99.9, us.
    pub p999_us: u64,
    /// max, us.
    pub max_us: u64,
    /// Operations that failed.
    pub errors: u64,
}

impl Level {
    fn from_summary(summary: &Summary) -> Level {
        let histogram = &summary.measurement.histogram;
        Level {
            sessions: summary.sessions,
            connections: summary.connections,
            ops_per_sec: summary.ops_per_sec(),
            mean_us: if histogram.is_empty() {
                0.0
            } else {
                histogram.mean()
            },
            p50_us: summary.latency_us(0.5),
            p90_us: summary.latency_us(0.9),
            p99_us: summary.latency_us(0.99),
            p999_us: summary.latency_us(0.999),
            max_us: histogram.max(),
            errors: summary.measurement.errors,
        }
    }

    fn power(&self) -> f64 {
        if self.mean_us > 0.0 {
            self.ops_per_sec / self.mean_us
        } else {
            0.0
        }
    }
}

/// Why the sweep stopped rising, if it did.
pub fn stop_reason(levels: &[Level]) -> Option<String> {
    let first = levels.first()?;
    let last = levels.last()?;
    if first.p99_us > 0 && last.p99_us as f64 > LATENCY_BLOWUP * first.p99_us as f64 {
        return Some(format!(
            "p99 {} us is over {LATENCY_BLOWUP}x the first level's {} us",
            last.p99_us, first.p99_us
        ));
    }
    let mut best = 0.0f64;
    let mut flat = 0;
    for level in levels {
        if level.ops_per_sec > best * (1.0 + RISE_MIN) {
            flat = 0;
        } else {
            flat += 1;
        }
        best = best.max(level.ops_per_sec);
    }
    (flat >= PLATEAU_LEVELS).then(|| {
        format!(
            "throughput rose less than {:.0}% for {flat} levels",
            RISE_MIN * 100.0
        )
    })
}

/// The level of highest power (throughput / mean latency).
pub fn knee(levels: &[Level]) -> Option<&Level> {
    levels.iter().max_by(|a, b| a.power().total_cmp(&b.power()))
}

/// Runs the sweep.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let system = if args.baseline.is_some() {
        System::TcpBaseline
    } else {
        System::Vsr
    };
    let mut target = Target::start(system, args)?;
    let before = target.cluster_stats();
    let mut levels: Vec<Level> = Vec::new();
    let mut sessions = 1;
    println!(
        "{:>9} {:>11} {:>12} {:>9} {:>9} {:>9} {:>7}",
        "sessions", "connections", "ops/s", "p50 us", "p99 us", "max us", "errors"
    );
    while sessions <= args.sweep_sessions_max && !stop::requested() {
        let connections = args.connections.min(sessions);
        let mut transport = target.connect(sessions, connections)?;
        let mut workload = Workload::new(
            args.service,
            args.payload_bytes,
            args.read_fraction,
            args.keys,
            sessions as u64,
        )
        .with_key_order(args.key_order);
        let spec = LoadSpec {
            sessions,
            rate: None,
            warmup: args.warmup,
            duration: args.duration,
            progress: !args.quiet,
            label: format!("sweep {sessions} "),
            check_replies: system == System::Vsr,
        };
        let measurement = driver::run(transport.as_mut(), &mut workload, &spec)?;
        drop(transport);
        let shape = Shape {
            sessions,
            connections,
            ..Shape::default()
        };
        let summary = target.summary(args, shape, measurement, &before);
        let suffix = format!("sessions-{sessions}");
        if let Some(path) = &args.json {
            summary.write_json(&output::with_suffix(path, Some(&suffix)))?;
        }
        if let Some(path) = &args.hgrm {
            summary.write_hgrm(&output::with_suffix(path, Some(&suffix)))?;
        }
        let level = Level::from_summary(&summary);
        println!(
            "{:>9} {:>11} {:>12.0} {:>9} {:>9} {:>9} {:>7}",
            level.sessions,
            level.connections,
            level.ops_per_sec,
            level.p50_us,
            level.p99_us,
            level.max_us,
            level.errors
        );
        levels.push(level);
        if let Some(reason) = stop_reason(&levels) {
            println!("sweep stopped: {reason}");
            break;
        }
        sessions *= 2;
    }
    anyhow::ensure!(!levels.is_empty(), "the sweep measured no level");
    let csv = match &args.csv {
        Some(path) => path.clone(),
        None => output::in_run_dir("sweep.csv")?,
    };
    let svg = match &args.svg {
        Some(path) => path.clone(),
        None => output::in_run_dir("sweep.svg")?,
    };
    let knee = knee(&levels);
    write_csv(&csv, &levels)?;
    plot_svg(&svg, system.title(), args.payload_bytes, &levels, knee)?;
    if let Some(knee) = knee {
        println!(
            "knee: {} sessions / {} connections: {:.0} ops/s at p50 {} us, p99 {} us",
            knee.sessions, knee.connections, knee.ops_per_sec, knee.p50_us, knee.p99_us
        );
    }
    println!("wrote {} and {}", csv.display(), svg.display());
    if args.json.is_some() || args.hgrm.is_some() {
        println!("one --json/--hgrm file per level: <stem>.sessions-<N>.<extension>");
    }
    target.succeeded();
    Ok(if stop::requested() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the levels as CSV.
pub fn write_csv(path: &Path, levels: &[Level]) -> anyhow::Result<()> {
    let mut text = String::from(
        "sessions,connections,ops_per_sec,mean_us,p50_us,p90_us,p99_us,p999_us,max_us,errors\n",
    );
    for l in levels {
        text += &format!(
            "{},{},{:.1},{:.1},{},{},{},{},{},{}\n",
            l.sessions,
            l.connections,
            l.ops_per_sec,
            l.mean_us,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.errors
        );
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A plotted latency series: name, colour, and the level's value.
type Series = (&'static str, plotters::style::RGBColor, fn(&Level) -> u64);

/// Draws throughput (x) against p50 and p99 latency (y, log scale), one point per level,
/// and marks the knee (a ring on both of its points, and its label).
pub fn plot_svg(
    path: &Path,
    system: &str,
    payload_bytes: usize,
    levels: &[Level],
    knee: Option<&Level>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let x_max = levels.iter().map(|l| l.ops_per_sec).fold(1.0, f64::max) * 1.1;
    let y_max = levels
        .iter()
        .map(|l| l.p99_us.max(1) as f64)
        .fold(10.0, f64::max)
        * 2.0;
    let y_min = levels
        .iter()
        .map(|l| l.p50_us.max(1) as f64)
        .fold(f64::MAX, f64::min)
        .max(1.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{system}: throughput vs latency ({payload_bytes} B payload)"),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("throughput (k ops/s)")
        .x_label_formatter(&|x| format!("{:.0}", x / 1000.0))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("latency (us)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let series: [Series; 2] = [("p50", BLUE, |l| l.p50_us), ("p99", RED, |l| l.p99_us)];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = levels
            .iter()
            .map(|l| (l.ops_per_sec, value(l).max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    chart
        .draw_series(levels.iter().map(|l| {
            Text::new(
                format!("{}", l.sessions),
                (l.ops_per_sec, l.p99_us.max(1) as f64 * 1.15),
                ("sans-serif", 12),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if let Some(knee) = knee {
        let points = [knee.p50_us, knee.p99_us].map(|y| (knee.ops_per_sec, y.max(1) as f64));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 9, BLACK.stroke_width(2))),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(format!("knee: {} sessions", knee.sessions))
            .legend(|(x, y)| Circle::new((x + 10, y), 6, BLACK.stroke_width(2)));
        chart
            .draw_series(std::iter::once(Text::new(
                format!("knee ({} sessions)", knee.sessions),
                (knee.ops_per_sec, knee.p50_us.max(1) as f64 / 1.6),
                ("sans-serif", 14),
            )))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(sessions: usize, ops_per_sec: f64, mean_us: f64, p99_us: u64) -> Level {
        Level {
            sessions,
            connections: 1,
            ops_per_sec,
            mean_us,
            p50_us: mean_us as u64,
            p90_us: p99_us,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
            errors: 0,
        }
    }

    #[test]
    fn plateau_and_blowup_stop_the_sweep() {
        let rising = [level(1, 1000.0, 100.0, 200), level(2, 1900.0, 105.0, 210)];
        assert_eq!(stop_reason(&rising), None);
        let flat = [
            level(1, 1000.0, 100.0, 200),
            level(2, 1020.0, 200.0, 400),
            level(4, 1010.0, 400.0, 800),
        ];
        assert!(stop_reason(&flat).unwrap().contains("rose less"));
        let blown = [
            level(1, 1000.0, 100.0, 200),
            level(2, 3000.0, 100.0, 20_000),
        ];
        assert!(stop_reason(&blown).unwrap().contains("p99"));
    }

    #[test]
    fn knee_is_the_level_of_highest_power() {
        let levels = [
            level(1, 1000.0, 100.0, 200),
            level(4, 3500.0, 115.0, 300),
            level(16, 4000.0, 400.0, 900),
        ];
        assert_eq!(knee(&levels).unwrap().sessions, 4);
    }

    #[test]
    fn csv_and_svg_are_written() {
        let dir = std::env::temp_dir().join(format!("vsr-load-sweep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let levels = [
            level(1, 1000.0, 100.0, 200),
            level(2, 1900.0, 105.0, 210),
            level(4, 2500.0, 160.0, 400),
        ];
        write_csv(&dir.join("s.csv"), &levels).unwrap();
        plot_svg(&dir.join("s.svg"), "vsr", 64, &levels, knee(&levels)).unwrap();
        let csv = std::fs::read_to_string(dir.join("s.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        let svg = std::fs::read_to_string(dir.join("s.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("throughput"),
            "{}",
            &svg[..200.min(svg.len())]
        );
        assert!(svg.contains("knee (2 sessions)"), "the knee is not marked");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
