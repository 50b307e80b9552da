//! What a run prints: the live line, the final summary with its latency table, and the
//! JSON document. I/O-free: everything returns strings or values.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::aggregate::Interval;
use super::recorder::{ErrorKind, Tally};
use super::runner::{LoadConfig, LoadOutcome};
use crate::addr::Address;
use crate::proto::hdr::{Latency, Summary, format_bytes, format_ns};

/// One interval, as the JSON document lists it.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalRow {
    /// Start, in seconds after the warm-up.
    pub start_s: f64,
    /// Length, in seconds.
    pub length_s: f64,
    /// Responses.
    pub requests: u64,
    /// Responses per second.
    pub rps: f64,
    /// Errors of every kind.
    pub errors: u64,
    /// Corrected median latency, µs.
    pub p50_us: f64,
    /// Corrected p99 latency, µs.
    pub p99_us: f64,
    /// Corrected maximum latency, µs.
    pub max_us: f64,
}

impl IntervalRow {
    /// The row of `interval`.
    pub fn of(interval: &Interval) -> Self {
        let s = Summary::of(&interval.sample.corrected);
        Self {
            start_s: interval.start.as_secs_f64(),
            length_s: interval.length().as_secs_f64(),
            requests: interval.sample.requests,
            rps: interval.rate(),
            errors: interval.sample.errors.total(),
            p50_us: us(s.levels[0]),
            p99_us: us(s.levels[2]),
            max_us: us(s.max),
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// The live line of one interval: time, rate, errors, p99 so far.
pub fn live_line(interval: &Interval, total: &Interval) -> String {
    format!(
        "{:>6.1}s  {:>10.0} req/s  {:>6} errors  p99 {} (so far {})",
        interval.end.as_secs_f64(),
        interval.rate(),
        interval.sample.errors.total(),
        p99_text(&interval.sample.corrected),
        p99_text(&total.sample.corrected),
    )
}

/// The p99 of `h`, or `none` when it holds no latency (nothing answered nor waiting).
fn p99_text(h: &Latency) -> String {
    if h.is_empty() {
        "none".into()
    } else {
        format_ns(h.value_at_quantile(0.99) as f64)
    }
}

/// The loop's name: `closed loop`, or `open loop at R req/s`.
fn loop_name(config: &LoadConfig) -> String {
    match config.rate {
        None => "closed loop".into(),
        Some(r) => format!("open loop at {r} req/s"),
    }
}

/// The final summary: what ran, totals, errors by kind, and the latency table.
pub fn summary(config: &LoadConfig, proto: &str, outcome: &LoadOutcome) -> String {
    let t = &outcome.total;
    let secs = t.length().as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target      {} ({proto}), {} connections on cores {:?}, {}, pipeline {}",
        Address::from(config.target),
        config.conns,
        outcome.cores,
        loop_name(config),
        config.pipeline
    );
    let warmup = if config.warmup.is_zero() {
        String::new()
    } else {
        format!(" after {:.2} s of warm-up", config.warmup.as_secs_f64())
    };
    let stopped = if outcome.interrupted { ", interrupted" } else { "" };
    let _ = writeln!(out, "duration    {secs:.2} s measured{warmup}{stopped}");
    let _ = writeln!(
        out,
        "requests    {} = {} req/s{}",
        t.sample.requests,
        rate_text(t.rate()),
        shortfall(config.rate, t.rate())
    );
    // Named as in the JSON (`unanswered`, `unsent`).
    if t.sample.unanswered > 0 {
        let _ = writeln!(
            out,
            "unanswered  {} written and still waiting at the end: in the latencies at their wait so far",
            t.sample.unanswered
        );
    }
    if t.sample.unsent > 0 {
        let _ = writeln!(
            out,
            "unsent      {} due before the end but never written (window full or connection down): \
             in the latencies at their wait from their intended time",
            t.sample.unsent
        );
    }
    let _ = writeln!(
        out,
        "transfer    {} sent, {} received",
        format_bytes(t.bytes.sent),
        format_bytes(t.bytes.received)
    );
    let errors = &t.sample.errors;
    if errors.total() == 0 {
        let _ = writeln!(out, "errors      none");
    } else {
        let kinds: Vec<String> = errors
            .nonzero()
            .map(|(k, n)| match k {
                ErrorKind::BadStatus => format!("{} {n} ({})", k.label(), tally(&t.sample.bad_statuses)),
                ErrorKind::ErrorReply => format!("{} {n} ({})", k.label(), tally(&t.sample.error_replies)),
                ErrorKind::TlsHandshake => match &t.sample.first_tls_failure {
                    Some(why) => format!("{} {n} (the first: {why})", k.label()),
                    None => format!("{} {n}", k.label()),
                },
                _ => format!("{} {n}", k.label()),
            })
            .collect();
        let _ = writeln!(out, "errors      {}: {}", errors.total(), kinds.join(", "));
    }
    let open = config.rate.is_some();
    out.push('\n');
    if t.sample.requests == 0 {
        let _ = writeln!(out, "latency     none: no request was answered");
    } else {
        out.push_str(&latency_table(
            &t.sample.corrected,
            open.then_some(&t.sample.uncorrected),
        ));
    }
    out
}

/// A rate with the digits that matter: whole requests/s from 10 up, two decimals below.
fn rate_text(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.2}")
    }
}

/// Counts by key: `404: 3, 503: 1`, `WRONGTYPE: 2`.
fn tally<K: Ord + Clone + std::fmt::Display>(counts: &Tally<K>) -> String {
    let keys: Vec<String> = counts.iter().map(|(key, n)| format!("{key}: {n}")).collect();
    keys.join(", ")
}

/// How far an open loop's answered rate fell short of the rate it offered, when by more than
/// 1%: requests due but not sent (the connections' windows were full), or sent but not
/// answered. Empty in a closed loop or on schedule.
fn shortfall(offered: Option<f64>, answered: f64) -> String {
    match offered {
        Some(r) if r > 0.0 && answered < 0.99 * r => format!(
            ", {:.0}% of the {r} req/s offered: the server (or this client) fell behind",
            100.0 * answered / r
        ),
        _ => String::new(),
    }
}

/// The latency table of `corrected`, with an `uncorrected` column beside it when given.
pub fn latency_table(corrected: &Latency, uncorrected: Option<&Latency>) -> String {
    let c = Summary::of(corrected);
    let u = uncorrected.map(Summary::of);
    let mut out = String::new();
    match u {
        Some(_) => {
            let _ = writeln!(out, "latency     {:>12}  {:>12}", "corrected", "uncorrected");
        }
        None => {
            let _ = writeln!(out, "latency");
        }
    }
    for (i, (label, v)) in c.rows().enumerate() {
        let _ = write!(out, "  {label:<9} {:>12}", format_ns(v as f64));
        if let Some(u) = &u {
            let uv = u.rows().nth(i).map_or(0, |(_, v)| v);
            let _ = write!(out, "  {:>12}", format_ns(uv as f64));
        }
        out.push('\n');
    }
    let _ = write!(out, "  {:<9} {:>12}", "mean", format_ns(c.mean));
    if let Some(u) = &u {
        let _ = write!(out, "  {:>12}", format_ns(u.mean));
    }
    out.push('\n');
    out
}

/// Percentiles in µs under the JSON keys p50, p90, p99, p999, p9999, max, and the mean.
fn latency_json(h: &Latency) -> Value {
    let s = Summary::of(h);
    let mut map = serde_json::Map::new();
    for (label, v) in s.rows() {
        map.insert(label.replace('.', ""), json!(us(v)));
    }
    map.insert("mean".into(), json!(s.mean / 1e3));
    Value::Object(map)
}

/// The JSON document: configuration, totals, errors, latencies (µs) and the intervals.
pub fn json(config: &LoadConfig, proto: &str, outcome: &LoadOutcome, intervals: &[IntervalRow]) -> Value {
    let t = &outcome.total;
    json!({
        "config": {
            "target": Address::from(config.target).to_string(),
            "proto": proto,
            "conns": config.conns,
            "cores": outcome.cores,
            "duration_s": config.duration.as_secs_f64(),
            "warmup_s": config.warmup.as_secs_f64(),
            "rate": config.rate,
            "pipeline": config.pipeline,
            "timeout_s": config.timeout.as_secs_f64(),
            "request_bytes": config.workload.request.len(),
            "request": config.workload.describe(),
            "keyspace": config.keyspace,
        },
        "requests": t.sample.requests,
        "unanswered": t.sample.unanswered,
        "unsent": t.sample.unsent,
        "rps": t.rate(),
        "offered_rps": config.rate,
        "duration_s": t.length().as_secs_f64(),
        "interrupted": outcome.interrupted,
        "bytes_sent": t.bytes.sent,
        "bytes_received": t.bytes.received,
        "errors": t.sample.errors,
        "bad_statuses": t.sample.bad_statuses,
        "error_replies": t.sample.error_replies,
        "latency_us": latency_json(&t.sample.corrected),
        "latency_uncorrected_us": latency_json(&t.sample.uncorrected),
        "intervals": intervals,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::load::recorder::Recorder;
    use crate::load::workload::Workload;

    fn outcome() -> LoadOutcome {
        let mut total = Interval {
            end: Duration::from_secs(2),
            ..Interval::default()
        };
        for v in 1..=1000u64 {
            total.sample.corrected.record(v * 1_000).unwrap();
            total.sample.uncorrected.record(v * 100).unwrap();
        }
        total.sample.requests = 1000;
        total.sample.unanswered = 3;
        total.sample.unsent = 2;
        total.sample.errors.add(ErrorKind::Reset);
        total.sample.errors.add(ErrorKind::BadStatus);
        total.sample.bad_statuses.add(503);
        total.sample.errors.add(ErrorKind::ErrorReply);
        total.sample.error_replies.add("WRONGTYPE".into());
        LoadOutcome {
            total,
            cores: vec![1],
            measured_from: SystemTime::UNIX_EPOCH,
            interrupted: false,
        }
    }

    fn config(rate: Option<f64>) -> LoadConfig {
        let mut c = LoadConfig::new("127.0.0.1:8080".parse().unwrap(), Workload::echo(8));
        c.rate = rate;
        c
    }

    #[test]
    fn json_has_the_documented_keys() {
        let o = outcome();
        let rows = vec![IntervalRow::of(&o.total)];
        let v = json(&config(Some(500.0)), "echo", &o, &rows);
        assert_eq!(v["requests"], 1000);
        assert_eq!(
            (v["unanswered"].clone(), v["unsent"].clone()),
            (3.into(), 2.into())
        );
        assert_eq!(v["rps"], 500.0);
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"][key].as_f64().unwrap() > 0.0, "{key}");
            assert!(v["latency_uncorrected_us"][key].as_f64().unwrap() > 0.0, "{key}");
        }
        let p99 = v["latency_us"]["p99"].as_f64().unwrap();
        assert!((p99 - 990.0).abs() < 1.0, "{p99}");
        assert_eq!(v["errors"]["reset"], 1);
        assert_eq!(v["errors"]["total"], 3);
        assert_eq!(v["bad_statuses"]["503"], 1);
        assert_eq!(v["error_replies"]["WRONGTYPE"], 1);
        assert_eq!(v["config"]["rate"], 500.0);
        assert_eq!(v["config"]["request"], "8 bytes");
        assert_eq!(v["intervals"][0]["requests"], 1000);
    }

    #[test]
    fn summary_shows_errors_and_both_columns_in_open_loop() {
        let o = outcome();
        let open = summary(&config(Some(500.0)), "echo", &o);
        assert!(open.contains("requests    1000 = 500 req/s"), "{open}");
        assert!(open.contains("unanswered  3 written and still waiting"), "{open}");
        assert!(
            open.contains("unsent      2 due before the end but never written"),
            "{open}"
        );
        assert!(
            open.contains("errors      3: reset 1, bad status 1 (503: 1), error reply 1 (WRONGTYPE: 1)"),
            "{open}"
        );
        assert!(open.contains("uncorrected"));
        assert!(open.contains("p99.99"));
        let closed = summary(&config(None), "echo", &o);
        assert!(!closed.contains("uncorrected"));
        assert!(closed.contains("closed loop"));
        let line = live_line(&o.total, &o.total);
        assert!(line.contains("500 req/s") && line.contains("p99 990"), "{line}");
    }

    #[test]
    fn tls_handshake_errors_say_why_the_first_failed() {
        let mut o = outcome();
        let mut r = Recorder::default();
        r.measure_from(Some(std::time::Instant::now()));
        r.tls_failure("invalid peer certificate: UnknownIssuer");
        r.tls_failure("something later");
        let mut other = Recorder::default();
        other.measure_from(Some(std::time::Instant::now()));
        other.tls_failure("from another core");
        o.total.sample.merge(&r.take());
        o.total.sample.merge(&other.take());
        let text = summary(&config(None), "echo", &o);
        assert!(
            text.contains("tls handshake 3 (the first: invalid peer certificate: UnknownIssuer)"),
            "{text}"
        );
    }

    #[test]
    fn an_open_loop_that_fell_behind_says_by_how_much() {
        let o = outcome();
        let on_time = summary(&config(Some(500.0)), "echo", &o);
        assert!(!on_time.contains("offered"), "{on_time}");
        let behind = summary(&config(Some(2000.0)), "echo", &o);
        assert!(
            behind.contains("requests    1000 = 500 req/s, 25% of the 2000 req/s offered"),
            "{behind}"
        );
        assert_eq!(
            json(&config(Some(2000.0)), "echo", &o, &[])["offered_rps"],
            2000.0
        );
    }

    #[test]
    fn a_run_with_no_answer_prints_no_latency_table() {
        let mut o = outcome();
        o.total.sample = Default::default();
        let s = summary(&config(None), "echo", &o);
        assert!(s.contains("latency     none: no request was answered"), "{s}");
        assert!(!s.contains("p99"), "{s}");
        let line = live_line(&o.total, &o.total);
        assert!(line.ends_with("p99 none (so far none)"), "{line}");
    }
}
