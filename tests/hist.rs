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
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut log = begin(&mut out, &mut ser, start, "test").unwrap();
    for (k, h) in intervals.iter().enumerate() {
        write_interval(
            &mut log,
            h,
            Duration::from_secs(k as u64),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
    }
    drop(log);
    std::fs::write(path, out).unwrap();
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
