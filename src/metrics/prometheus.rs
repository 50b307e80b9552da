//! The Prometheus text exposition format (version 0.0.4) of a [`MetricsSnapshot`] and of
//! the process's own figures. I/O-free.

use std::fmt::{Display, Write};

use super::collector::{MetricsSnapshot, ShardMetrics};
use super::process::ProcessStats;
use super::scalar::ScalarSeries;
use crate::proto::accept::errno_name;
use crate::proto::close::CLOSE_LABELS;
use crate::proto::tls::HANDSHAKE_LABELS;
use crate::tls::TlsSet;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram buckets, in seconds (1 µs to 10 s).
const BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One per-shard counter or gauge family: name, type, help, value.
type Family = (&'static str, &'static str, &'static str, fn(&ShardMetrics) -> u64);

const FAMILIES: [Family; 18] = [
    (
        "weft_connections_accepted_total",
        "counter",
        "Connections accepted and handed to a protocol.",
        |s| s.stats.accepted,
    ),
    (
        "weft_connections_active",
        "gauge",
        "Connections open now (the SO_REUSEPORT balance across shards).",
        |s| s.stats.active,
    ),
    (
        "weft_connections_refused_total",
        "counter",
        "Connections the factory refused.",
        |s| s.stats.refused,
    ),
    (
        "weft_connections_shed_total",
        "counter",
        "Connections accepted and closed at once because the shard was at its cap.",
        |s| s.stats.shed,
    ),
    (
        "weft_proxy_untrusted_total",
        "counter",
        "Connections closed unread: their peer is not a trusted balancer of a PROXY listener.",
        |s| s.stats.proxy_untrusted,
    ),
    (
        "weft_proxy_invalid_total",
        "counter",
        "Connections closed because their PROXY header was malformed or missing.",
        |s| s.stats.proxy_invalid,
    ),
    (
        "weft_proxy_timeouts_total",
        "counter",
        "Connections closed because their PROXY header did not arrive in time.",
        |s| s.stats.proxy_timeouts,
    ),
    (
        "weft_bytes_received_total",
        "counter",
        "Bytes read from peers.",
        |s| s.stats.bytes_in,
    ),
    (
        "weft_bytes_sent_total",
        "counter",
        "Bytes written to peers.",
        |s| s.stats.bytes_out,
    ),
    (
        "weft_emfile_recoveries_total",
        "counter",
        "Times the shard released its reserved descriptor to drain the queue on EMFILE.",
        |s| s.stats.emfile_recoveries,
    ),
    (
        "weft_shard_calls_sent_total",
        "counter",
        "Cross-shard calls the shard sent.",
        |s| s.stats.calls_sent,
    ),
    (
        "weft_shard_calls_received_total",
        "counter",
        "Cross-shard calls the shard ran for other shards and outside threads.",
        |s| s.stats.calls_received,
    ),
    (
        "weft_shard_calls_queued",
        "gauge",
        "Cross-shard calls queued for the shard, not run yet.",
        |s| s.stats.calls_queued,
    ),
    (
        "weft_tls_errors_total",
        "counter",
        "TLS connections closed for a TLS error after their handshake.",
        |s| s.stats.tls_errors,
    ),
    (
        "weft_reactor_stalls_total",
        "counter",
        "Wake-ups of the reactor lag probe later than the stall threshold.",
        |s| s.stalls,
    ),
    (
        "weft_metrics_reports_total",
        "counter",
        "Metrics reports the collector received from the shard.",
        |s| s.reports,
    ),
    (
        "weft_metrics_reports_dropped_total",
        "counter",
        "Metrics reports the shard dropped because the collector's queue was full.",
        |s| s.dropped,
    ),
    (
        "weft_shard_core",
        "gauge",
        "The CPU core the shard runs on.",
        |s| s.core as u64,
    ),
];

/// Renders every metric of `snapshot`; per-shard series carry a `shard` label.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "weft_shards",
        "gauge",
        "Shards: one reactor thread per core.",
    );
    line(&mut out, "weft_shards", &[], snapshot.shards.len());
    for (name, kind, help, value) in FAMILIES {
        header(&mut out, name, kind, help);
        for s in &snapshot.shards {
            line(&mut out, name, &[("shard", &s.shard.to_string())], value(s));
        }
    }
    let name = "weft_connections_closed_total";
    header(&mut out, name, "counter", "Connections closed, by reason.");
    for s in &snapshot.shards {
        for (reason, n) in CLOSE_LABELS.iter().zip(s.stats.closed) {
            line(
                &mut out,
                name,
                &[("shard", &s.shard.to_string()), ("reason", reason)],
                n,
            );
        }
    }
    let name = "weft_tls_handshakes_total";
    header(&mut out, name, "counter", "TLS handshakes, by result.");
    for s in &snapshot.shards {
        for (result, n) in HANDSHAKE_LABELS.iter().zip(s.stats.tls_handshakes) {
            line(
                &mut out,
                name,
                &[("shard", &s.shard.to_string()), ("result", result)],
                n,
            );
        }
    }
    let name = "weft_accept_errors_total";
    header(&mut out, name, "counter", "Failed accepts, by errno.");
    for s in &snapshot.shards {
        let shard = s.shard.to_string();
        for &(errno, n) in &s.stats.accept_errors {
            line(
                &mut out,
                name,
                &[("shard", &shard), ("errno", &errno_name(errno))],
                n,
            );
        }
    }
    let name = "weft_metrics_report_age_seconds";
    header(
        &mut out,
        name,
        "gauge",
        "Time since the shard made the report its metrics come from.",
    );
    for s in &snapshot.shards {
        if let Some(age) = s.age {
            line(
                &mut out,
                name,
                &[("shard", &s.shard.to_string())],
                age.as_secs_f64(),
            );
        }
    }
    scalars(&mut out, snapshot, |s| &s.counters, "counter");
    scalars(&mut out, snapshot, |s| &s.gauges, "gauge");
    for metric in snapshot.latency_names() {
        histogram(&mut out, snapshot, metric);
    }
    out
}

/// Appends `weft_serving`: 1 while the service serves and its health check passes, 0 once
/// a shutdown, a handoff or `fail_health` started. During a handoff both processes answer
/// scrapes on the shared port; this (with `process_start_time_seconds`) tells which one a
/// scrape reached.
pub(crate) fn render_serving(out: &mut String, serving: bool) {
    let name = "weft_serving";
    header(
        out,
        name,
        "gauge",
        "1 while this process serves and passes its health check; 0 once it drains or hands off.",
    );
    line(out, name, &[], u8::from(serving));
}

/// Appends a service's TLS families: each certificate's notAfter
/// (`weft_tls_certificate_expiry_seconds{name,file,subject}`, Unix seconds; a certificate
/// whose validity cannot be read is left out) and the SIGHUP reloads by result
/// (`weft_tls_reloads_total{result}`). Nothing without TLS listeners.
pub(crate) fn render_tls(out: &mut String, tls: &TlsSet) {
    let certificates = tls.certificates();
    if certificates.is_empty() {
        return;
    }
    let name = "weft_tls_certificate_expiry_seconds";
    header(
        out,
        name,
        "gauge",
        "When each loaded TLS certificate expires (its notAfter), in Unix seconds.",
    );
    for c in &certificates {
        if let Some(d) = &c.dates {
            let file = c.file.display().to_string();
            let labels = [
                ("name", c.name.as_str()),
                ("file", &file),
                ("subject", &d.subject),
            ];
            line(out, name, &labels, d.not_after);
        }
    }
    let name = "weft_tls_reloads_total";
    header(
        out,
        name,
        "counter",
        "TLS certificate reloads (SIGHUP), by result.",
    );
    for (result, n) in ["ok", "failed"].into_iter().zip(tls.reloads()) {
        line(out, name, &[("result", result)], n);
    }
}

/// The counters (`weft_<name>_total`) or gauges (`weft_<name>`) that the shards' code
/// recorded, one family per name in first-seen order, one series per shard and label value.
fn scalars<T: Display>(
    out: &mut String,
    snapshot: &MetricsSnapshot,
    series: fn(&ShardMetrics) -> &[ScalarSeries<T>],
    kind: &str,
) {
    let mut names: Vec<(&'static str, &'static str)> = Vec::new();
    for s in snapshot.shards.iter().flat_map(series) {
        if !names.iter().any(|(name, _)| *name == s.name) {
            names.push((s.name, s.help));
        }
    }
    let suffix = if kind == "counter" { "_total" } else { "" };
    for (metric, help) in names {
        let name = format!("weft_{}{suffix}", sanitize(metric));
        header(out, &name, kind, help);
        for s in &snapshot.shards {
            let shard = s.shard.to_string();
            for one in series(s).iter().filter(|one| one.name == metric) {
                let mut labels = vec![("shard", shard.as_str())];
                labels.extend(one.label);
                line(out, &name, &labels, &one.value);
            }
        }
    }
}

/// The process's figures as Prometheus client libraries name them (`process_*`; a figure
/// that could not be read is left out), and `weft_build_info`.
pub(crate) fn render_process(p: &ProcessStats) -> String {
    let mut out = String::with_capacity(1024);
    let families: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes.map(|b| b as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes.map(|b| b as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds.map(|n| n as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds.map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(value) = value {
            header(&mut out, name, kind, help);
            line(&mut out, name, &[], value);
        }
    }
    let name = "weft_build_info";
    header(
        &mut out,
        name,
        "gauge",
        "Always 1, labeled with the version of weft that serves.",
    );
    line(&mut out, name, &[("version", env!("CARGO_PKG_VERSION"))], 1);
    out
}

/// One latency metric as a Prometheus histogram in seconds, one series per shard (and per
/// target, on a per-target metric).
fn histogram(out: &mut String, snapshot: &MetricsSnapshot, metric: &str) {
    let base = format!("weft_{}_seconds", sanitize(metric));
    let bucket = format!("{base}_bucket");
    let mut headed = false;
    for s in &snapshot.shards {
        let shard = s.shard.to_string();
        for series in s.latency.iter().filter(|l| l.name == metric) {
            if !headed {
                header(out, &base, "histogram", series.help);
                headed = true;
            }
            let target = series.target.map(|(label, t)| (label, t.to_string()));
            let mut labels = vec![("shard", shard.as_str())];
            if let Some((label, t)) = &target {
                labels.push((label, t.as_str()));
            }
            let h = &series.histogram;
            let buckets = BUCKETS
                .iter()
                .map(|le| (le.to_string(), h.count_between(0, (le * 1e9).round() as u64)))
                .chain([("+Inf".to_string(), h.len())]);
            for (le, n) in buckets {
                let mut with_le = labels.clone();
                with_le.push(("le", &le));
                line(out, &bucket, &with_le, n);
            }
            line(out, &format!("{base}_sum"), &labels, series.sum_ns as f64 / 1e9);
            line(out, &format!("{base}_count"), &labels, h.len());
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A metric name part made of `[a-zA-Z0-9_]` only.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::recorder::series;
    use crate::stats::StatsSnapshot;

    fn shard(index: usize, accepted: u64) -> ShardMetrics {
        let mut stats = StatsSnapshot {
            accepted,
            active: 1,
            bytes_in: 100,
            bytes_out: 90,
            accept_errors: vec![(libc::EMFILE, 3)],
            ..Default::default()
        };
        stats.closed[0] = 1; // eof
        stats.closed[3] = 2; // reset
        ShardMetrics {
            shard: index,
            core: index + 2,
            stats,
            stalls: 0,
            latency: Vec::new(),
            counters: Vec::new(),
            gauges: Vec::new(),
            reports: 4,
            dropped: 1,
            made: None,
            age: Some(Duration::from_millis(250)),
        }
    }

    fn values<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next())
            .collect()
    }

    #[test]
    fn counters_carry_the_shard_label() {
        let mut first = shard(0, 5);
        first.stats.proxy_untrusted = 4;
        let snap = MetricsSnapshot {
            shards: vec![first, shard(1, 7)],
        };
        let text = render(&snap);
        assert!(text.contains("weft_proxy_untrusted_total{shard=\"0\"} 4\n"));
        assert!(text.contains("# TYPE weft_connections_accepted_total counter\n"));
        assert!(text.contains("weft_connections_accepted_total{shard=\"0\"} 5\n"));
        assert!(text.contains("weft_connections_accepted_total{shard=\"1\"} 7\n"));
        assert!(text.contains("weft_connections_active{shard=\"1\"} 1\n"));
        assert!(text.contains("weft_bytes_received_total{shard=\"0\"} 100\n"));
        assert!(text.contains("weft_bytes_sent_total{shard=\"0\"} 90\n"));
        assert!(text.contains("weft_connections_closed_total{shard=\"1\",reason=\"reset\"} 2\n"));
        assert!(text.contains("weft_accept_errors_total{shard=\"0\",errno=\"EMFILE\"} 3\n"));
        assert!(text.contains("weft_metrics_report_age_seconds{shard=\"0\"} 0.25\n"));
        assert!(text.contains("weft_shard_core{shard=\"1\"} 3\n"));
        assert!(text.contains("weft_shards 2\n"));
        // Every sample line is `name{labels} value`, every family has HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(l.split(' ').count(), 2, "{l}");
        }
        assert_eq!(text.matches("# HELP").count(), text.matches("# TYPE").count());
    }

    #[test]
    fn latency_is_a_cumulative_histogram_in_seconds() {
        let mut s = shard(0, 1);
        s.latency.push(series(
            "http-request",
            &[500, 3_000, 3_000, 2_000_000, 20_000_000_000],
        ));
        let text = render(&MetricsSnapshot { shards: vec![s] });
        assert!(text.contains("# TYPE weft_http_request_seconds histogram\n"));
        assert!(text.contains("weft_http_request_seconds_bucket{shard=\"0\",le=\"0.000001\"} 1\n"));
        assert!(text.contains("weft_http_request_seconds_bucket{shard=\"0\",le=\"0.000005\"} 3\n"));
        assert!(text.contains("weft_http_request_seconds_bucket{shard=\"0\",le=\"10\"} 4\n"));
        assert!(text.contains("weft_http_request_seconds_bucket{shard=\"0\",le=\"+Inf\"} 5\n"));
        assert!(text.contains("weft_http_request_seconds_sum{shard=\"0\"} 20.0020065\n"));
        assert!(text.contains("weft_http_request_seconds_count{shard=\"0\"} 5\n"));
        let counts: Vec<u64> = values(&text, "weft_http_request_seconds_bucket")
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "buckets are cumulative");
    }

    #[test]
    fn per_target_series_carry_their_target() {
        let mut s = shard(1, 1);
        for (target, values) in [(0, &[1_000u64][..]), (2, &[2_000, 3_000][..])] {
            let mut t = series("shard_call", values);
            t.target = Some(("target", target));
            s.latency.push(t);
        }
        let text = render(&MetricsSnapshot { shards: vec![s] });
        assert_eq!(
            text.matches("# TYPE weft_shard_call_seconds histogram").count(),
            1
        );
        assert!(text.contains("weft_shard_call_seconds_count{shard=\"1\",target=\"0\"} 1\n"));
        assert!(text.contains("weft_shard_call_seconds_count{shard=\"1\",target=\"2\"} 2\n"));
        assert!(text.contains("weft_shard_call_seconds_bucket{shard=\"1\",target=\"2\",le=\"+Inf\"} 2\n"));
    }

    #[test]
    fn counters_and_gauges_carry_shard_and_label() {
        let mut s = shard(3, 1);
        fn one<T>(
            name: &'static str,
            label: Option<(&'static str, &'static str)>,
            value: T,
        ) -> ScalarSeries<T> {
            ScalarSeries {
                name,
                help: "What it counts.",
                label,
                value,
            }
        }
        s.counters.push(one("kv_commands", Some(("family", "read")), 7));
        s.counters.push(one("kv_commands", Some(("family", "write")), 2));
        s.gauges.push(one("kv.keys", None, -4i64));
        let text = render(&MetricsSnapshot { shards: vec![s] });
        assert!(text.contains("# HELP weft_kv_commands_total What it counts.\n"));
        assert!(text.contains("# TYPE weft_kv_commands_total counter\n"));
        assert!(text.contains("weft_kv_commands_total{shard=\"3\",family=\"read\"} 7\n"));
        assert!(text.contains("weft_kv_commands_total{shard=\"3\",family=\"write\"} 2\n"));
        assert_eq!(text.matches("# TYPE weft_kv_commands_total").count(), 1);
        assert!(text.contains("# TYPE weft_kv_keys gauge\n"));
        assert!(text.contains("weft_kv_keys{shard=\"3\"} -4\n"));
    }

    #[test]
    fn process_series_as_client_libraries_name_them() {
        let text = render_process(&ProcessStats {
            resident_bytes: Some(4096),
            cpu_seconds: Some(1.5),
            max_fds: None,
            ..Default::default()
        });
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"));
        assert!(text.contains("process_resident_memory_bytes 4096\n"));
        assert!(!text.contains("process_max_fds"), "unread figures are left out");
        let build = format!("weft_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        line(&mut out, "m", &[("a", "x\"y\\z\nw")], 1);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
        assert_eq!(sanitize("a.b-c_9"), "a_b_c_9");
    }
}
