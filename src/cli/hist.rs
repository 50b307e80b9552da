//! `weft hist`: read HdrHistogram interval logs (`weft load --hdr-log` from one or several load
//! machines, `weft serve --hdr-log`), merge them, print the summary and the percentile table,
//! and plot them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use weft::hdr::log::Log;
use weft::hdr::svg::{self, TimeSeries};
use weft::hdr::{Latency, Summary, format_ns, merge, new_merge_target};
use weft::load::report::latency_table;

use super::CliError;

#[derive(Debug, Args)]
pub(crate) struct HistArgs {
    /// Interval logs to read and merge.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write an SVG plot: the percentile spectrum, one series per file (with --over-time:
    /// p99 and max over time).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also print p50, p99 and max per interval.
    #[arg(long)]
    over_time: bool,
    /// Read the intervals with this tag (default: the untagged ones; `weft load` writes
    /// the uncorrected latency under `uncorrected`).
    #[arg(long)]
    tag: Option<String>,
    /// Runs to compare rather than parts of one run: a column per file (with its ratio to
    /// the first) instead of the merged table, and each file's time counted from its own
    /// start in the --over-time plot.
    #[arg(long)]
    compare: bool,
}

/// One input file, read.
struct Input {
    name: String,
    log: Log,
}

impl Input {
    /// When its first interval with `tag` starts (infinity without one).
    fn start(&self, tag: Option<&str>) -> f64 {
        self.log
            .tagged(tag)
            .map(|iv| iv.start)
            .fold(f64::INFINITY, f64::min)
    }
}

pub(crate) fn run(args: HistArgs) -> Result<(), CliError> {
    let tag = args.tag.as_deref();
    let mut inputs = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CliError::Failure(format!("cannot read {name}: {e}")))?;
        let log =
            Log::read(&bytes).map_err(|e| CliError::Failure(format!("{name}: {e}{}", hgrm_hint(&bytes))))?;
        if log.truncated {
            eprintln!(
                "weft hist: {name}: its last line was cut short (its writer stopped mid-line) and is left out"
            );
        }
        inputs.push(Input { name, log });
    }
    let selected: usize = inputs.iter().map(|i| i.log.tagged(tag).count()).sum();
    if selected == 0 {
        return Err(CliError::Failure(no_intervals(&inputs, tag)));
    }
    let mut merged = new_merge_target();
    let per_file: Vec<Latency> = inputs.iter().map(|i| i.log.merged(tag)).collect();
    for h in &per_file {
        merge(&mut merged, h);
    }
    let t0 = inputs.iter().map(|i| i.start(tag)).fold(f64::INFINITY, f64::min);

    let mut out = String::new();
    let files: Vec<String> = inputs
        .iter()
        .map(|i| format!("{} ({} intervals)", i.name, i.log.tagged(tag).count()))
        .collect();
    let _ = writeln!(out, "files       {}", files.join(", "));
    let _ = writeln!(
        out,
        "tag         {}",
        tag.map_or(
            "none (corrected latency in weft load logs)".to_owned(),
            str::to_owned
        )
    );
    let span = inputs
        .iter()
        .flat_map(|i| i.log.tagged(tag).map(|iv| iv.start + iv.length))
        .fold(t0, f64::max)
        - t0;
    let _ = writeln!(out, "count       {} values over {span:.2} s", merged.len());
    out.push('\n');
    if args.compare {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        out.push_str(&compare_table(&names, &per_file));
    } else {
        out.push_str(&latency_table(&merged, None));
    }
    if args.over_time && args.compare {
        // A table per run, each from its own start.
        for input in &inputs {
            let _ = write!(out, "\n{}\n", input.name);
            out.push_str(&over_time_table(
                std::slice::from_ref(input),
                tag,
                input.start(tag),
            ));
        }
    } else if args.over_time {
        out.push('\n');
        out.push_str(&over_time_table(&inputs, tag, t0));
    }
    print!("{out}");

    if let Some(path) = &args.plot {
        let title = format!("latency{}", tag.map(|t| format!(" ({t})")).unwrap_or_default());
        let doc = if args.over_time {
            let series: Vec<TimeSeries> = inputs
                .iter()
                .map(|i| {
                    // Compared runs start at 0 each; parts of one run keep their common clock.
                    let origin = if args.compare { i.start(tag) } else { t0 };
                    TimeSeries {
                        name: i.name.clone(),
                        points: i
                            .log
                            .tagged(tag)
                            .map(|iv| {
                                let s = Summary::of(&iv.histogram);
                                (iv.start + iv.length - origin, s.levels[2], s.max)
                            })
                            .collect(),
                    }
                })
                .collect();
            svg::over_time(&format!("{title} over time"), &series)
        } else {
            let series: Vec<(String, &Latency)> = inputs
                .iter()
                .map(|i| i.name.clone())
                .zip(per_file.iter())
                .collect();
            svg::spectrum(&format!("{title} by percentile"), &series)
        };
        std::fs::write(path, doc)
            .map_err(|e| CliError::Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The error for a selection that matched nothing, naming the tags that exist.
fn no_intervals(inputs: &[Input], tag: Option<&str>) -> String {
    let mut tags: Vec<String> = inputs
        .iter()
        .flat_map(|i| {
            i.log
                .intervals
                .iter()
                .map(|iv| iv.tag.clone().unwrap_or_else(|| "(none)".into()))
        })
        .collect();
    tags.sort();
    tags.dedup();
    let wanted = tag.unwrap_or("(none)");
    if tags.is_empty() {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        format!(
            "{} {} no intervals (an empty log: did its run end before the first interval?)",
            names.join(", "),
            if names.len() == 1 { "has" } else { "have" }
        )
    } else {
        format!(
            "no intervals with tag {wanted} (tags present: {})",
            tags.join(", ")
        )
    }
}

/// p50, p99 and max per interval, the files' intervals merged by time: the buckets are the
/// typical interval long (see `bucket_width`), counted from the earliest start.
fn over_time_table(inputs: &[Input], tag: Option<&str>, t0: f64) -> String {
    let width = bucket_width(inputs.iter().flat_map(|i| i.log.tagged(tag).map(|iv| iv.length)));
    let mut buckets: BTreeMap<u64, Latency> = BTreeMap::new();
    for iv in inputs.iter().flat_map(|i| i.log.tagged(tag)) {
        let k = ((iv.start - t0) / width + 1e-6).floor().max(0.0) as u64;
        merge(buckets.entry(k).or_insert_with(new_merge_target), &iv.histogram);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>12} {:>12} {:>12}",
        "time", "count", "p50", "p99", "max"
    );
    for (k, h) in &buckets {
        let s = Summary::of(h);
        let _ = writeln!(
            out,
            "{:>8.1} s {:>10} {:>12} {:>12} {:>12}",
            *k as f64 * width,
            s.count,
            format_ns(s.levels[0] as f64),
            format_ns(s.levels[2] as f64),
            format_ns(s.max as f64)
        );
    }
    out
}

/// The latency table with a column per run, and each later run's ratio to the first.
fn compare_table(names: &[&str], runs: &[Latency]) -> String {
    let summaries: Vec<Summary> = runs.iter().map(Summary::of).collect();
    let mut out = String::new();
    let _ = write!(out, "{:<11}", "latency");
    for (i, name) in names.iter().enumerate() {
        let _ = write!(out, " {name:>14}");
        if i > 0 {
            let _ = write!(out, " {:>8}", "vs first");
        }
    }
    out.push('\n');
    let Some(first) = summaries.first() else {
        return out;
    };
    // A column per run: its percentiles, then its mean; the labels are the first run's.
    let column = |s: &Summary| -> Vec<f64> { s.rows().map(|(_, v)| v as f64).chain([s.mean]).collect() };
    let columns: Vec<Vec<f64>> = summaries.iter().map(column).collect();
    let labels = first.rows().map(|(label, _)| label).chain(["mean"]);
    for (r, label) in labels.enumerate() {
        let _ = write!(out, "  {label:<9}");
        let base = columns[0][r];
        for (i, v) in columns.iter().map(|c| c[r]).enumerate() {
            let _ = write!(out, " {:>14}", format_ns(v));
            if i > 0 {
                let ratio = if base > 0.0 { v / base } else { f64::NAN };
                let _ = write!(out, " {:>7.2}x", ratio);
            }
        }
        out.push('\n');
    }
    let _ = write!(out, "  {:<9}", "count");
    for (i, s) in summaries.iter().enumerate() {
        let _ = write!(out, " {:>14}", s.count);
        if i > 0 {
            let _ = write!(out, " {:>8}", "");
        }
    }
    out.push('\n');
    out
}

/// A hint for a file that is a percentile distribution (`weft load --hgrm`, HdrHistogram's
/// `outputPercentileDistribution`) rather than an interval log.
fn hgrm_hint(bytes: &[u8]) -> &'static str {
    let head = &bytes[..bytes.len().min(200)];
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    if String::from_utf8_lossy(first)
        .split_whitespace()
        .take(2)
        .eq(["Value", "Percentile"])
    {
        " (this is a percentile distribution, a .hgrm file, which has no intervals: give weft \
         hist the --hdr-log file of the run)"
    } else {
        ""
    }
}

/// The width of the over-time table's rows: the intervals' typical (median) length, so that
/// a short last interval (an interrupted run, a duration that is not a whole number of
/// intervals) neither narrows every row nor mislabels their times; 1 s without intervals.
fn bucket_width(lengths: impl Iterator<Item = f64>) -> f64 {
    let mut lengths: Vec<f64> = lengths.filter(|l| *l > 0.0).collect();
    lengths.sort_by(f64::total_cmp);
    lengths.get(lengths.len() / 2).copied().unwrap_or(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_as_wide_as_the_typical_interval_not_a_short_last_one() {
        assert_eq!(bucket_width([1.0, 1.0, 0.401].into_iter()), 1.0);
        assert_eq!(bucket_width([1.0, 0.401].into_iter()), 1.0);
        assert_eq!(bucket_width([0.5, 0.5, 0.5, 0.2].into_iter()), 0.5);
        assert_eq!(bucket_width([0.0].into_iter()), 1.0);
        assert_eq!(bucket_width(std::iter::empty()), 1.0);
    }

    #[test]
    fn compared_runs_get_a_column_each_and_a_ratio_to_the_first() {
        let mut a = new_merge_target();
        let mut b = new_merge_target();
        for v in 1..=100u64 {
            a.record(v * 1_000).unwrap();
            b.record(v * 2_000).unwrap();
        }
        let t = compare_table(&["a.hlog", "b.hlog"], &[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("a.hlog") && lines[0].contains("b.hlog"), "{t}");
        let p99 = lines.iter().find(|l| l.trim_start().starts_with("p99 ")).unwrap();
        assert!(
            p99.contains("99.") && p99.contains("198.") && p99.ends_with("2.00x"),
            "{t}"
        );
        assert!(lines.last().unwrap().contains("100"), "{t}");
    }

    #[test]
    fn a_percentile_distribution_is_named_as_such() {
        let hgrm = b"       Value     Percentile TotalCount 1/(1-Percentile)\n\n       0.010 0.0 1 1.00\n";
        assert!(hgrm_hint(hgrm).contains(".hgrm"));
        assert_eq!(hgrm_hint(b"#[StartTime: 1.0]\n"), "");
        assert_eq!(hgrm_hint(b""), "");
    }
}
