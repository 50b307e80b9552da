//! `weft hist`: read HdrHistogram interval logs (`weft load --hdr-log` from one or several load
//! machines, `weft serve --hdr-log`), merge them, print the summary and the percentile table,
//! and plot them.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use clap::Args;
use weft::hdr::log::{Interval, Log, LogError};
use weft::hdr::svg::{self, TimeSeries};
use weft::hdr::timeline::{Row, Timeline, read_in_time_order, typical_width};
use weft::hdr::{Latency, Percentiles, Unit, foreign, format_ns, hgrm, merge, new_merge_target};

use super::CliError;

/// Skipped lines named one by one per file; the rest are counted.
const SKIPPED_NAMED: usize = 3;

#[derive(Debug, Args)]
pub(crate) struct HistArgs {
    /// Interval logs to read and merge (each at most once).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write an SVG plot: the percentile spectrum, one series per file (with --over-time:
    /// p99 and max over time, with a gap where an interval has no values).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also print count, p50, p99 and max per interval, timed from the log's StartTime
    /// (`-` for an interval without values).
    #[arg(long)]
    over_time: bool,
    /// Read the intervals with this tag (default: the untagged ones; `weft load` writes
    /// the uncorrected latency under `uncorrected`).
    #[arg(long)]
    tag: Option<String>,
    /// Runs to compare rather than parts of one run: a column per file (with its ratio to
    /// the first, its count and span) instead of the merged table, and each file's time
    /// counted from its own start in the --over-time table and plot.
    #[arg(long)]
    compare: bool,
    /// What one recorded value means: ns (weft's logs, HdrHistogram's tools; the default),
    /// us (wrk2, memtier_benchmark), ms or s. Logs do not say; the output names the unit
    /// assumed, and a log whose MaxValueDivisor is 1000 (that of a µs log) read as ns gets
    /// a hint.
    #[arg(long, value_name = "ns|us|ms|s")]
    unit: Option<Unit>,
    /// The percentile rows of the table, in percent [default: 50,90,99,99.9,99.99].
    #[arg(long, value_name = "P,P...")]
    percentiles: Option<Percentiles>,
    /// Also write the merged histogram (every file together) as a percentile distribution
    /// in ms, the .hgrm layout of `weft load --hgrm` and HdrHistogram's plotter.
    #[arg(long, value_name = "OUT")]
    hgrm: Option<PathBuf>,
}

/// One input file, read: its name and log.
struct Input<'a> {
    name: String,
    log: Log<'a>,
}

/// What the intervals add up to, gathered in one pass in time order.
struct Gathered {
    /// Each file's intervals merged.
    totals: Vec<Latency>,
    /// The over-time rows: one table of every file (merged by time), or one per file
    /// (--compare); empty without --over-time.
    tables: Vec<Vec<Row>>,
    /// Each file's p99 and max per interval, for the over-time plot.
    series: Vec<TimeSeries>,
}

pub(crate) fn run(args: HistArgs) -> Result<(), CliError> {
    refuse_repeated_paths(&args)?;
    let unit = args.unit.unwrap_or_default();
    let percentiles = args.percentiles.clone().unwrap_or_default();
    let mut contents = Vec::new();
    for path in &args.files {
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::Failure(format!("cannot read {}: {e}", path.display())))?;
        contents.push((path.display().to_string(), bytes));
    }
    let mut inputs = Vec::new();
    for (name, bytes) in &contents {
        let log = Log::read(bytes).map_err(|e| {
            CliError::Failure(match foreign::hint(bytes) {
                Some(hint) => format!("{name}: {hint}; read as an interval log: {e}"),
                None => format!("{name}: {e}"),
            })
        })?;
        warn_about(name, &log, args.unit);
        inputs.push(Input {
            name: name.clone(),
            log,
        });
    }
    let only = sole_tag(&inputs).filter(|_| args.tag.is_none());
    if let Some(t) = only {
        eprintln!("weft hist: no untagged intervals: reading the only tag, {t} (as --tag {t})");
    }
    let tag = args.tag.as_deref().or(only);
    let selected: usize = inputs.iter().map(|i| i.log.tagged(tag).count()).sum();
    if selected == 0 {
        return Err(CliError::Failure(no_intervals(&inputs, tag)));
    }
    let gathered = gather(&inputs, tag, &args, unit)?;
    let mut merged = new_merge_target();
    for h in &gathered.totals {
        merge(&mut merged, h);
    }

    let mut out = header(&inputs, tag, unit);
    let columns: Vec<(&str, &Latency)> = if args.compare {
        inputs
            .iter()
            .map(|i| i.name.as_str())
            .zip(&gathered.totals)
            .collect()
    } else {
        let _ = writeln!(
            out,
            "count       {} values over {:.2} s",
            merged.len(),
            span(&inputs.iter().map(|i| &i.log).collect::<Vec<_>>(), tag)
        );
        vec![("", &merged)]
    };
    out.push('\n');
    let spans: Vec<f64> = inputs.iter().map(|i| span(&[&i.log], tag)).collect();
    out.push_str(&latency_table(&columns, &percentiles, unit, &spans));
    for (i, rows) in gathered.tables.iter().enumerate() {
        match args.compare {
            // A table per run, each from its own start.
            true => {
                let _ = write!(out, "\n{}\n", inputs[i].name);
            }
            false => out.push('\n'),
        }
        out.push_str(&over_time_table(rows, unit));
    }
    print!("{out}");

    if let Some(path) = &args.plot {
        let title = format!("latency{}", tag.map(|t| format!(" ({t})")).unwrap_or_default());
        let doc = if args.over_time {
            svg::over_time(&format!("{title} over time"), &gathered.series)
        } else {
            let series: Vec<(String, &Latency)> = inputs
                .iter()
                .map(|i| i.name.clone())
                .zip(&gathered.totals)
                .collect();
            svg::spectrum(&format!("{title} by percentile"), &series, unit.ns())
        };
        std::fs::write(path, doc).map_err(|e| write_failed(path, e))?;
    }
    if let Some(path) = &args.hgrm {
        let mut f = BufWriter::new(std::fs::File::create(path).map_err(|e| write_failed(path, e))?);
        hgrm::write(&merged, hgrm::NS_PER_MS / unit.ns(), &mut f)
            .and_then(|()| f.flush())
            .map_err(|e| write_failed(path, e))?;
    }
    Ok(())
}

fn write_failed(path: &Path, e: std::io::Error) -> CliError {
    CliError::Failure(format!("cannot write {}: {e}", path.display()))
}

/// Refuses a file named twice (its counts would add twice) and an output that is an input
/// or the other output.
fn refuse_repeated_paths(args: &HistArgs) -> Result<(), CliError> {
    // The same file by another name (./a.hlog, a symlink) is the same file.
    let key = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let inputs: Vec<PathBuf> = args.files.iter().map(|p| key(p)).collect();
    for (i, k) in inputs.iter().enumerate() {
        if let Some(j) = inputs[..i].iter().position(|other| other == k) {
            let (first, again) = (args.files[j].display(), args.files[i].display());
            let named = if first.to_string() == again.to_string() {
                format!("{first} is given twice")
            } else {
                format!("{first} is given twice (again as {again})")
            };
            return Err(CliError::Usage(format!(
                "{named}: each file is read once, or its counts would add twice"
            )));
        }
    }
    let outputs = [("--plot", &args.plot), ("--hgrm", &args.hgrm)];
    for (i, (flag, path)) in outputs.iter().enumerate() {
        let Some(path) = path else { continue };
        if inputs.contains(&key(path)) {
            return Err(CliError::Usage(format!(
                "{flag} {} is one of the logs read: give it its own file",
                path.display()
            )));
        }
        if let Some((other, _)) = outputs[i + 1..].iter().find(|(_, p)| p.as_ref() == Some(path)) {
            return Err(CliError::Usage(format!(
                "{flag} and {other} name the same file {}: give each its own",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Warns about lines left out of `log`, and about a divisor that suggests another unit than
/// the one its values are read in (`--unit`, applied to every file; ns by default).
fn warn_about(name: &str, log: &Log<'_>, unit: Option<Unit>) {
    if log.truncated {
        eprintln!(
            "weft hist: {name}: its last line was cut short (its writer stopped mid-line) and is left out"
        );
    }
    for s in log.skipped.iter().take(SKIPPED_NAMED) {
        eprintln!("weft hist: {name}: line {} left out: {}", s.line, s.reason);
    }
    if log.skipped.len() > SKIPPED_NAMED {
        eprintln!(
            "weft hist: {name}: {} more lines left out for the same reasons",
            log.skipped.len() - SKIPPED_NAMED
        );
    }
    let read_as = unit.unwrap_or_default();
    if let Some(divisor) = log.max_value_divisor
        && let Some(suggested) = Unit::suggested_by(divisor)
        && suggested != read_as
    {
        let given = if unit.is_some() {
            "--unit applies to every file"
        } else {
            "ns by default"
        };
        eprintln!(
            "weft hist: {name}: values are read as {} ({given}), but its MaxValueDivisor of {divisor} \
             is that of a log recorded in {} (max column in ms): if so, give --unit {}",
            read_as.name(),
            suggested.name(),
            suggested.name()
        );
    }
}

/// Reads every selected interval once, in time order, into what the output needs: a
/// histogram per file, one per over-time row being filled, one decoded interval.
fn gather(
    inputs: &[Input<'_>],
    tag: Option<&str>,
    args: &HistArgs,
    unit: Unit,
) -> Result<Gathered, CliError> {
    let logs: Vec<&Log<'_>> = inputs.iter().map(|i| &i.log).collect();
    let origins: Vec<f64> = logs.iter().map(|l| l.origin(tag).unwrap_or(0.0)).collect();
    let t0 = origins.iter().copied().fold(f64::INFINITY, f64::min);
    // Rows start at the first interval, as wide as the typical one.
    let timeline = |logs: &[&Log<'_>], origin: f64| {
        let intervals = || logs.iter().flat_map(|l| l.tagged(tag));
        let first = intervals().map(|iv| iv.start).fold(f64::INFINITY, f64::min);
        Timeline::new(first, typical_width(intervals().map(|iv| iv.length)), origin)
    };
    let mut timelines: Vec<Timeline> = match (args.over_time, args.compare) {
        (false, _) => Vec::new(),
        (true, false) => vec![timeline(&logs, t0)],
        (true, true) => logs
            .iter()
            .zip(&origins)
            .map(|(l, o)| timeline(&[l], *o))
            .collect(),
    };
    let plot_over_time = args.over_time && args.plot.is_some();
    let mut series: Vec<TimeSeries> = inputs
        .iter()
        .filter(|_| plot_over_time)
        .map(|i| TimeSeries {
            name: i.name.clone(),
            points: Vec::new(),
        })
        .collect();
    let mut totals: Vec<Latency> = inputs.iter().map(|_| new_merge_target()).collect();
    let scale = |v: u64| (v as f64 * unit.ns()) as u64;
    read_in_time_order(&logs, tag, |i, iv: &Interval<'_>, h| {
        let timeline = if args.compare {
            timelines.get_mut(i)
        } else {
            timelines.first_mut()
        };
        let fits = merge(&mut totals[i], h) && timeline.is_none_or(|t| t.add(iv.start, h));
        if let Some(s) = series.get_mut(i) {
            // Compared runs start at 0 each; parts of one run keep their common clock.
            let origin = if args.compare { origins[i] } else { t0 };
            let values = (!h.is_empty()).then(|| (scale(h.value_at_quantile(0.99)), scale(h.max())));
            // At the interval's start, as the over-time table labels it.
            s.points.push((iv.start - origin, values));
        }
        match fits {
            true => Ok(()),
            false => Err(LogError::Payload {
                line: iv.line,
                detail: "its values do not fit a histogram".into(),
            }),
        }
    })
    .map_err(|(i, e)| CliError::Failure(format!("{}: {e}", inputs[i].name)))?;
    Ok(Gathered {
        totals,
        tables: timelines.into_iter().map(Timeline::finish).collect(),
        series,
    })
}

/// The lines above the table: the files (with their interval counts), the tag and the unit.
fn header(inputs: &[Input<'_>], tag: Option<&str>, unit: Unit) -> String {
    let mut out = String::new();
    let files: Vec<String> = inputs
        .iter()
        .map(|i| format!("{} ({})", i.name, counted(&i.log, tag)))
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
    let _ = writeln!(out, "unit        values in {unit} (--unit)");
    out
}

/// `N intervals`, saying which when the log has intervals with other tags too.
fn counted(log: &Log<'_>, tag: Option<&str>) -> String {
    let n = log.tagged(tag).count();
    let noun = if n == 1 { "interval" } else { "intervals" };
    match (log.intervals.len() > n, tag) {
        (false, _) => format!("{n} {noun}"),
        (true, Some(t)) => format!("{n} {noun} tagged {t}"),
        (true, None) => format!("{n} untagged {noun}"),
    }
}

/// Seconds from the first selected interval's start to the last one's end.
fn span(logs: &[&Log<'_>], tag: Option<&str>) -> f64 {
    let intervals = || logs.iter().flat_map(|l| l.tagged(tag));
    let first = intervals().map(|iv| iv.start).fold(f64::INFINITY, f64::min);
    let last = intervals()
        .map(|iv| iv.start + iv.length)
        .fold(f64::NEG_INFINITY, f64::max);
    if last >= first { last - first } else { 0.0 }
}

/// The tag of every interval of every input, when they all carry the same one (`weft serve
/// --hdr-log` with one metric): what a run without --tag reads instead of nothing.
fn sole_tag<'a>(inputs: &[Input<'a>]) -> Option<&'a str> {
    let mut tags = inputs
        .iter()
        .flat_map(|i| i.log.intervals.iter().map(|iv| iv.tag));
    let first = tags.next()??;
    tags.all(|t| t == Some(first)).then_some(first)
}

/// The error for a selection that matched nothing, naming the tags that exist.
fn no_intervals(inputs: &[Input<'_>], tag: Option<&str>) -> String {
    let mut tags: Vec<&str> = inputs
        .iter()
        .flat_map(|i| i.log.intervals.iter().map(|iv| iv.tag.unwrap_or("(none)")))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let wanted = tag.unwrap_or("(none)");
    let skipped: usize = inputs.iter().map(|i| i.log.skipped.len()).sum();
    if tags.is_empty() && skipped > 0 {
        format!("no intervals left: all {skipped} were left out (see the lines above)")
    } else if tags.is_empty() {
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

/// The latency table: the percentiles, max, min, mean and standard deviation of each
/// `(name, histogram)` in a column. One column has no name; several (runs compared) are
/// named, each later one with its ratio to the first, and end with each run's count and
/// span (`spans`, seconds).
fn latency_table(
    columns: &[(&str, &Latency)],
    percentiles: &Percentiles,
    unit: Unit,
    spans: &[f64],
) -> String {
    let compared = columns.len() > 1 || columns.first().is_some_and(|(name, _)| !name.is_empty());
    let mut out = String::new();
    let _ = write!(out, "{:<11}", "latency");
    if compared {
        for (i, (name, _)) in columns.iter().enumerate() {
            let _ = write!(out, " {name:>14}");
            if i > 0 {
                let _ = write!(out, " {:>8}", "vs first");
            }
        }
    }
    let out_line = |out: &mut String| {
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    };
    out_line(&mut out);
    // A column per histogram: its percentiles, then max, min, mean and stddev, in ns; NaN
    // (printed `none`) for a histogram without values.
    let column = |h: &Latency| -> Vec<(String, f64)> {
        let empty = h.is_empty();
        let stat = |f: fn(&Latency) -> f64| if empty { f64::NAN } else { f(h) };
        percentiles
            .of(h)
            .map(|(label, v)| (label.to_owned(), if empty { f64::NAN } else { v as f64 }))
            .chain([
                ("max".to_owned(), stat(|h| h.max() as f64)),
                ("min".to_owned(), stat(|h| h.min() as f64)),
                ("mean".to_owned(), stat(Latency::mean)),
                ("stddev".to_owned(), stat(Latency::stdev)),
            ])
            .map(|(label, v)| (label, v * unit.ns()))
            .collect()
    };
    let cell = |v: f64| {
        if v.is_nan() {
            "none".to_owned()
        } else {
            format_ns(v)
        }
    };
    let table: Vec<Vec<(String, f64)>> = columns.iter().map(|(_, h)| column(h)).collect();
    let Some(first) = table.first() else {
        return out;
    };
    for (r, (label, base)) in first.iter().enumerate() {
        let _ = write!(out, "  {label:<9}");
        for (i, v) in table.iter().map(|c| c[r].1).enumerate() {
            let _ = write!(out, " {:>14}", cell(v));
            if i > 0 {
                if *base > 0.0 && !v.is_nan() {
                    let _ = write!(out, " {:>7.2}x", v / base);
                } else {
                    // Nothing to compare with: a column without values.
                    let _ = write!(out, " {:>8}", "none");
                }
            }
        }
        out.push('\n');
    }
    if compared {
        let cells: [(&str, Vec<String>); 2] = [
            (
                "count",
                columns.iter().map(|(_, h)| h.len().to_string()).collect(),
            ),
            ("span", spans.iter().map(|s| format!("{s:.2} s")).collect()),
        ];
        for (label, values) in cells {
            let _ = write!(out, "  {label:<9}");
            for (i, v) in values.iter().enumerate() {
                let _ = write!(out, " {v:>14}");
                if i > 0 {
                    let _ = write!(out, " {:>8}", "");
                }
            }
            out_line(&mut out);
        }
    }
    out
}

/// Count, p50, p99 and max per row; `-` for a row whose intervals hold no values.
fn over_time_table(rows: &[Row], unit: Unit) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>12} {:>12} {:>12}",
        "time", "count", "p50", "p99", "max"
    );
    for row in rows {
        let s = &row.summary;
        let value = |v: u64| {
            if s.count == 0 {
                "-".to_owned()
            } else {
                format_ns(v as f64 * unit.ns())
            }
        };
        let _ = writeln!(
            out,
            "{:>8.1} s {:>10} {:>12} {:>12} {:>12}",
            row.time,
            s.count,
            value(s.levels[0]),
            value(s.levels[2]),
            value(s.max)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(scale: u64) -> Latency {
        let mut h = new_merge_target();
        for v in 1..=100u64 {
            h.record(v * scale).unwrap();
        }
        h
    }

    #[test]
    fn compared_runs_get_a_column_each_a_ratio_to_the_first_and_their_own_count_and_span() {
        let (a, b) = (values(1_000), values(2_000));
        let t = latency_table(
            &[("a.hlog", &a), ("b.hlog", &b)],
            &Percentiles::default(),
            Unit::Ns,
            &[3.0, 12.5],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("a.hlog") && lines[0].contains("b.hlog"), "{t}");
        let row = |label: &str| *lines.iter().find(|l| l.trim_start().starts_with(label)).unwrap();
        let p99 = row("p99 ");
        assert!(
            p99.contains("99.") && p99.contains("198.") && p99.ends_with("2.00x"),
            "{t}"
        );
        assert!(
            row("min ").ends_with("2.00x") && row("stddev ").ends_with("2.00x"),
            "{t}"
        );
        assert_eq!(
            row("count").split_whitespace().collect::<Vec<_>>(),
            ["count", "100", "100"]
        );
        assert_eq!(
            row("span").split_whitespace().collect::<Vec<_>>(),
            ["span", "3.00", "s", "12.50", "s"]
        );
    }

    #[test]
    fn one_table_has_the_chosen_percentiles_min_and_stddev_in_the_unit() {
        let h = values(1);
        let levels: Percentiles = "50,99.999".parse().unwrap();
        let t = latency_table(&[("", &h)], &levels, Unit::Us, &[1.0]);
        let labels: Vec<&str> = t
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(labels, ["p50", "p99.999", "max", "min", "mean", "stddev"], "{t}");
        assert_eq!(t.lines().next(), Some("latency"));
        let row = |label: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(label))
                .unwrap()
        };
        assert!(
            row("min").ends_with(" 1.000 µs") && row("max").ends_with(" 100.0 µs"),
            "{t}"
        );
    }

    #[test]
    fn a_column_without_values_says_none_not_zero() {
        let empty = new_merge_target();
        let t = latency_table(&[("", &empty)], &Percentiles::default(), Unit::Ns, &[1.0]);
        let rows: Vec<&str> = t.lines().skip(1).collect();
        assert!(
            !rows.is_empty() && rows.iter().all(|r| r.ends_with(" none")),
            "{t}"
        );
    }

    #[test]
    fn empty_rows_print_a_dash_not_zero() {
        let rows = [
            Row {
                time: 2.0,
                summary: weft::hdr::Summary::of(&values(1)),
            },
            Row {
                time: 3.0,
                summary: weft::hdr::Summary::default(),
            },
        ];
        let t = over_time_table(&rows, Unit::Ms);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("     2.0 s") && lines[1].ends_with("100.0 ms"),
            "{t}"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["3.0", "s", "0", "-", "-", "-"]
        );
    }

    #[test]
    fn interval_counts_say_which_tag_and_are_singular_or_plural() {
        let bytes = b"Tag=a,0.0,1.0,1.0,HISTF\n1.0,1.0,1.0,HISTF\nTag=a,2.0,1.0,1.0,HISTF\n";
        let log = Log::read(bytes).unwrap();
        assert_eq!(counted(&log, Some("a")), "2 intervals tagged a");
        assert_eq!(counted(&log, None), "1 untagged interval");
        let only = Log::read(b"1.0,1.0,1.0,HISTF\n").unwrap();
        assert_eq!(counted(&only, None), "1 interval");
    }
}
