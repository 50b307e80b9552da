//! `weft hist`: merging interval logs, agreement with an independent reader (the Python
//! `hdrhistogram` package), and the SVG plots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use util::{Scratch, ServeChild, latency_rows, run_weft, server_and_load_cores};
use weft::hdr::log::{begin, write_interval};
use weft::hdr::{Latency, Summary, format_ns, new_histogram};

/// Writes a log of one-second intervals starting at `start`.
fn write_log(path: &Path, start: SystemTime, intervals: &[Latency]) {
    std::fs::write(path, log_text(start, 0, intervals)).unwrap();
}

/// A log whose StartTime is `start` and whose one-second intervals start `first` seconds
/// after it.
fn log_text(start: SystemTime, first: u64, intervals: &[Latency]) -> String {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut log = begin(&mut out, &mut ser, start, "test").unwrap();
    for (k, h) in (first..).zip(intervals) {
        write_interval(&mut log, h, Duration::from_secs(k), Duration::from_secs(1), None).unwrap();
    }
    drop(log);
    String::from_utf8(out).unwrap()
}

/// Runs `weft hist ARGS`, which must fail: its exit status and standard error.
fn hist_failure(args: &[&str]) -> (i32, String) {
    let out = run_weft(args, Duration::from_secs(20));
    assert!(!out.status.success(), "{args:?} should fail");
    (out.status.code().unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// Runs `weft hist ARGS`, which must succeed: its standard output and error.
fn hist_with_stderr(args: &[&str]) -> (String, String) {
    let out = run_weft(args, Duration::from_secs(20));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn hist(values: impl IntoIterator<Item = u64>) -> Latency {
    let mut h = new_histogram();
    for v in values {
        h.record(v).unwrap();
    }
    h
}

fn hist_output(args: &[&str]) -> String {
    let out = run_weft(args, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Merging two logs gives the histogram of both runs together: the same count and the
/// same percentile table.
#[test]
fn merging_two_logs_equals_both_runs_together() {
    let scratch = Scratch::new("hist-merge");
    let dir = &scratch.0;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // Run A: 1..1000 µs over three intervals; run B: slower, 1..3000 µs over two.
    let a: Vec<Latency> = (0..3u64)
        .map(|k| hist((1..=1000).map(|v| v * 1000 + k)))
        .collect();
    let b: Vec<Latency> = (0..2u64)
        .map(|k| hist((1..=1500).map(|v| v * 2000 + k)))
        .collect();
    let (pa, pb) = (dir.join("a.hlog"), dir.join("b.hlog"));
    write_log(&pa, t0, &a);
    write_log(&pb, t0 + Duration::from_millis(300), &b);
    let mut together = new_histogram();
    for h in a.iter().chain(&b) {
        together.add(h).unwrap();
    }

    let text = hist_output(&["hist", pa.to_str().unwrap(), pb.to_str().unwrap()]);
    assert!(
        text.contains(&format!("count       {} values", together.len())),
        "{text}"
    );
    let expected = Summary::of(&together);
    let printed = latency_rows(&text);
    for (label, v) in expected.rows() {
        let row = printed
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("{label}: {text}"));
        assert_eq!(format_ns(row.1), format_ns(v as f64), "{label}");
    }
    // Over time: the logs' intervals merge by time, 3 one-second buckets.
    let text = hist_output(&["hist", pa.to_str().unwrap(), pb.to_str().unwrap(), "--over-time"]);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains(" 2500 "),
        "interval 0 holds A's 1000 and B's 1500 values: {text}"
    );
}

/// Two runs compared: a column each (their own percentiles, not the merge) with the second's
/// ratio to the first; over time, each run counted from its own start.
#[test]
fn compared_runs_get_a_column_each_and_their_own_clocks() {
    let scratch = Scratch::new("hist-compare");
    let dir = &scratch.0;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let a: Vec<Latency> = (0..2u64).map(|_| hist((1..=1000).map(|v| v * 1000))).collect();
    let b: Vec<Latency> = (0..2u64).map(|_| hist((1..=1000).map(|v| v * 2000))).collect();
    let (pa, pb) = (dir.join("a.hlog"), dir.join("b.hlog"));
    write_log(&pa, t0, &a);
    // The second run an hour later.
    write_log(&pb, t0 + Duration::from_secs(3600), &b);
    let (fa, fb) = (pa.to_str().unwrap(), pb.to_str().unwrap());
    let text = hist_output(&["hist", fa, fb, "--compare", "--over-time"]);
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("p99 "))
        .unwrap_or_else(|| panic!("{text}"));
    let expected_a = format_ns(Summary::of(&a[0]).levels[2] as f64);
    assert!(
        p99.contains(&expected_a) && p99.trim_end().ends_with("2.00x"),
        "{text}"
    );
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("0.0 s"))
        .collect();
    assert_eq!(starts.len(), 2, "each run from its own start: {text}");
    assert!(!text.contains("3600.0 s"), "{text}");
    // No count summed over both runs, nor a time spanning the hour between them: each
    // run's own, in its column.
    assert!(!text.contains("values over"), "{text}");
    let row = |label: &str| -> Vec<&str> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap();
        line.split_whitespace().collect()
    };
    assert_eq!(row("count "), ["count", "2000", "2000"], "{text}");
    assert_eq!(row("span "), ["span", "2.00", "s", "2.00", "s"], "{text}");
}

/// The same file twice would double its counts: a usage error naming it.
#[test]
fn a_file_given_twice_is_refused() {
    let scratch = Scratch::new("hist-twice");
    let p = scratch.0.join("a.hlog");
    write_log(&p, t0(), &[hist([1_000])]);
    let a = p.to_str().unwrap();
    let (code, err) = hist_failure(&["hist", a, a]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{a} is given twice")), "{err}");
    let again = scratch.0.join(".").join("a.hlog");
    let (code, err) = hist_failure(&["hist", a, again.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("given twice (again as"), "{err}");
}

/// A log whose intervals all carry one tag (`weft serve --hdr-log` with one metric) is read
/// under that tag without --tag, saying so; with two tags, --tag is still needed.
#[test]
fn the_only_tag_is_read_without_tag() {
    let scratch = Scratch::new("hist-only-tag");
    let tagged = |tags: &[&str]| {
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut log = begin(&mut out, &mut ser, t0(), "test").unwrap();
        for (k, tag) in (0..).zip(tags) {
            let h = hist([1_000 * (k + 1)]);
            write_interval(
                &mut log,
                &h,
                Duration::from_secs(k),
                Duration::from_secs(1),
                Some(*tag),
            )
            .unwrap();
        }
        drop(log);
        out
    };
    let one = scratch.0.join("one.hlog");
    std::fs::write(&one, tagged(&["reactor_lag", "reactor_lag"])).unwrap();
    let (out, err) = hist_with_stderr(&["hist", one.to_str().unwrap()]);
    assert!(err.contains("reading the only tag, reactor_lag"), "{err}");
    assert!(out.contains("reactor_lag"), "{out}");
    let two = scratch.0.join("two.hlog");
    std::fs::write(&two, tagged(&["reactor_lag", "other"])).unwrap();
    let (code, err) = hist_failure(&["hist", two.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tags present: other, reactor_lag"), "{err}");
}

/// An interval without values is `-` in the over-time table and a gap in the plot, not 0.
#[test]
fn empty_intervals_print_a_dash_and_break_the_plot_line() {
    let scratch = Scratch::new("hist-empty-interval");
    let (p, svg) = (scratch.0.join("a.hlog"), scratch.0.join("a.svg"));
    let full = || hist((1..=100).map(|v| v * 1_000));
    write_log(&p, t0(), &[full(), new_histogram(), full()]);
    let text = hist_output(&[
        "hist",
        p.to_str().unwrap(),
        "--over-time",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("1.0 s"))
        .unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["1.0", "s", "0", "-", "-", "-"]
    );
    let doc = std::fs::read_to_string(&svg).unwrap();
    // Two runs of one interval each: a p99 and a max line each, no line through 0.
    assert_eq!(doc.matches("<polyline").count(), 4, "{doc}");
}

/// --over-time counts from the log's StartTime: a server log whose first interval starts
/// 2 s in starts at 2.0 s.
#[test]
fn over_time_counts_from_the_logs_start_time() {
    let scratch = Scratch::new("hist-start-time");
    let p = scratch.0.join("serve.hlog");
    std::fs::write(&p, log_text(t0(), 2, &[hist([5_000]), hist([6_000])])).unwrap();
    let text = hist_output(&["hist", p.to_str().unwrap(), "--over-time"]);
    let times: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(times, ["2.0", "3.0"], "{text}");
}

/// --unit scales every value and is named; a µs-style MaxValueDivisor read as ns by default
/// gets a hint.
#[test]
fn the_unit_is_chosen_named_and_hinted() {
    let scratch = Scratch::new("hist-unit");
    let p = scratch.0.join("us.hlog");
    let text = log_text(t0(), 0, &[hist([50, 2_000])]);
    let text = text.replace("#[MaxValueDivisor: 1000000.000]", "#[MaxValueDivisor: 1000.000]");
    assert!(text.contains("Divisor: 1000.000]"), "{text}");
    std::fs::write(&p, text).unwrap();
    let f = p.to_str().unwrap();
    let (out, err) = hist_with_stderr(&["hist", f]);
    assert!(out.contains("values in ns"), "{out}");
    assert!(err.contains("give --unit us"), "{err}");
    let max = |out: &str| latency_rows(out).into_iter().find(|(l, _)| l == "max").unwrap().1;
    assert_eq!(format_ns(max(&out)), "2.000 µs");
    let (out, err) = hist_with_stderr(&["hist", f, "--unit", "us"]);
    assert!(out.contains("values in us") && err.is_empty(), "{out}{err}");
    assert_eq!(format_ns(max(&out)), "2.000 ms");
    let (code, err) = hist_failure(&["hist", f, "--unit", "minutes"]);
    assert_eq!(code, 2, "{err}");
    // --unit applies to every file: a weft log (ns, divisor 1e6) beside it is named.
    let ns = scratch.0.join("ns.hlog");
    std::fs::write(&ns, log_text(t0(), 0, &[hist([50])])).unwrap();
    let (_, err) = hist_with_stderr(&["hist", f, ns.to_str().unwrap(), "--unit", "us", "--compare"]);
    assert!(
        err.contains("ns.hlog: values are read as us (--unit applies to every file)")
            && err.contains("give --unit ns"),
        "{err}"
    );
}

/// An interval with a negative time (Python hdrh's writer) is left out with a warning
/// naming its line; an unreadable line is an error naming its number and why.
#[test]
fn negative_times_are_skipped_and_bad_lines_named() {
    let scratch = Scratch::new("hist-negative");
    let p = scratch.0.join("py.hlog");
    let good = log_text(t0(), 0, &[hist([1_000]), hist([2_000])]);
    let payload = good.lines().last().unwrap().rsplit(',').next().unwrap();
    let lines = good.lines().count();
    std::fs::write(&p, format!("{good}-5.000,1.000,0.002,{payload}\n")).unwrap();
    let (out, err) = hist_with_stderr(&["hist", p.to_str().unwrap()]);
    assert!(out.contains("count       2 values"), "{out}");
    assert!(
        err.contains(&format!(
            "line {} left out: its start time -5 is negative",
            lines + 1
        )),
        "{err}"
    );
    std::fs::write(&p, format!("{good}1.0,oops\n")).unwrap();
    let (code, err) = hist_failure(&["hist", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "line {} does not read: 2 comma-separated fields",
            lines + 1
        )),
        "{err}"
    );
}

/// Files that are not interval logs are named for what they are.
#[test]
fn foreign_files_get_a_hint() {
    let scratch = Scratch::new("hist-foreign");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "run.hlog.gz",
            &[0x1f, 0x8b, 0x08, 0x00, 0xff],
            "gzip-compressed: gunzip it first",
        ),
        (
            "wrk.txt",
            b"Running 2s test @ http://127.0.0.1:8080/\n  Latency Distribution\n",
            "wrk2 writes none",
        ),
        ("run.json", b"{\"config\": {}}\n", "this is JSON"),
    ];
    for (name, bytes, hint) in cases {
        let p = scratch.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        let (code, err) = hist_failure(&["hist", p.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(
            err.contains(hint) && err.contains("line 1 does not read"),
            "{err}"
        );
    }
}

/// --percentiles chooses the rows, min and stddev are printed, --hgrm writes the merged
/// histogram as `weft load --hgrm` would, and the file label counts the chosen tag.
#[test]
fn percentiles_min_stddev_hgrm_and_labels() {
    let scratch = Scratch::new("hist-hgrm");
    let (p, out_hgrm) = (scratch.0.join("a.hlog"), scratch.0.join("a.hgrm"));
    let h = hist((1..=1000).map(|v| v * 1_000));
    std::fs::write(&p, log_text(t0(), 0, std::slice::from_ref(&h))).unwrap();
    let text = hist_output(&[
        "hist",
        p.to_str().unwrap(),
        "--percentiles",
        "50,99.999",
        "--hgrm",
        out_hgrm.to_str().unwrap(),
    ]);
    let labels: Vec<String> = latency_rows(&text).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        ["p50", "p99.999", "max", "min", "mean", "stddev"],
        "{text}"
    );
    assert!(text.contains("a.hlog (1 interval)\n"), "{text}");
    let mut expected = Vec::new();
    weft::hdr::hgrm::write(&h, weft::hdr::hgrm::NS_PER_MS, &mut expected).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out_hgrm).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

/// The SVG parses, and has one series per input file, in both plots.
#[test]
fn svg_plots_are_well_formed_with_one_series_per_input() {
    let scratch = Scratch::new("hist-svg");
    let dir = &scratch.0;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let files: Vec<PathBuf> = (1..=3u64)
        .map(|k| {
            let p = dir.join(format!("run<{k}>&.hlog"));
            write_log(
                &p,
                t0,
                &[hist((1..=500).map(|v| v * 1000 * k)), hist([k * 5_000_000])],
            );
            p
        })
        .collect();
    for over_time in [false, true] {
        let svg = dir.join(format!("plot-{over_time}.svg"));
        let mut args: Vec<&str> = vec!["hist"];
        args.extend(files.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--plot", svg.to_str().unwrap()]);
        if over_time {
            args.push("--over-time");
        }
        hist_output(&args);
        let text = std::fs::read_to_string(&svg).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let series: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("series"))
            .collect();
        assert_eq!(series.len(), files.len(), "over_time={over_time}");
        for (node, file) in series.iter().zip(&files) {
            assert_eq!(node.attribute("data-name"), file.to_str());
            assert!(node.children().any(|c| c.has_tag_name("polyline")));
        }
    }
}

/// Decodes the log with the Python `hdrhistogram` package (`hdrh`, installed by
/// .ci/install-deps) and prints count, p50, p90, p99, p99.9, p99.99 and max in ns for the
/// intervals with the given tag (or the untagged ones).
const PY_READER: &str = r#"
import math, sys
from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram
path, tag = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
reader = HistogramLogReader(path, HdrHistogram(1, 3600 * 10**9, 3))
total = None
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    if h.get_tag() != tag:
        continue
    if total is None:
        total = h
    else:
        total.add(h)
n = total.get_total_count()
out = [n]
for p in (50.0, 90.0, 99.0, 99.9, 99.99):
    # hdrh rounds the target rank to nearest, HdrHistogram's Rust and Java ports round up:
    # ask hdrh for the rank the others use.
    rank = max(1, math.ceil(p * n / 100.0 - 1e-9))
    out.append(total.get_value_at_percentile(100.0 * rank / n))
out.append(total.get_max_value())
print(" ".join(str(v) for v in out))
"#;

fn python_percentiles(log: &Path, tag: Option<&str>) -> Vec<f64> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY_READER).arg(log);
    cmd.args(tag);
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// A real `weft load` log decodes with a reader nobody here wrote to the percentiles that
/// `weft hist` prints, for both the corrected and the uncorrected view.
#[test]
fn python_hdrhistogram_reads_the_same_percentiles() {
    util::require_peer(util::Peer::Python("hdrh"));
    let (server_core, load_core) = server_and_load_cores();
    let server = ServeChild::start("http", &server_core);
    let scratch = Scratch::new("hist-python");
    let dir = &scratch.0;
    let log = dir.join("run.hlog");
    let target = server.addr.to_string();
    let out = run_weft(
        &[
            "load",
            "--target",
            &target,
            "--rate",
            "3000",
            "--duration",
            "2s",
            "--conns",
            "8",
            "--cores",
            &load_core,
            "--hdr-log",
            log.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(server);
    for tag in [None, Some("uncorrected")] {
        let py = python_percentiles(&log, tag);
        let mut args = vec!["hist", log.to_str().unwrap()];
        if let Some(t) = tag {
            args.extend(["--tag", t]);
        }
        let text = hist_output(&args);
        assert!(
            text.contains(&format!("count       {} values", py[0] as u64)),
            "{tag:?}: {py:?}\n{text}"
        );
        let rows = latency_rows(&text);
        for (i, label) in ["p50", "p90", "p99", "p99.9", "p99.99", "max"].iter().enumerate() {
            let printed = rows.iter().find(|(l, _)| l == label).unwrap().1;
            let expected = py[i + 1];
            // weft hist prints 4 significant digits.
            assert!(
                (printed - expected).abs() <= expected * 5e-4 + 0.5,
                "{tag:?} {label}: weft hist {printed} ns, hdrh {expected} ns\n{text}"
            );
        }
    }
}
