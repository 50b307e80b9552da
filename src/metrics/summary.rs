//! One compact line of what changed between two snapshots (`weft serve --stats-interval`).
//! I/O-free.

use std::fmt::Write;
use std::time::Duration;

use super::REACTOR_LAG;
use super::collector::MetricsSnapshot;
use crate::proto::hdr::{format_bytes, format_ns};

/// Describes the interval from `prev` to `cur`: connections (total and per shard), accept and
/// close rates (and the rate of connections shed at the cap, when there are any), bytes per
/// second each way, reactor lag and stalls, each latency metric's rate and percentiles over
/// the interval, and the shards' metrics reports the collector dropped.
///
/// Rates are over the time between the shards' reports the two snapshots come from (their
/// mean over shards that reported since `prev`), or over `wall`, the time between the
/// snapshots, when that is unknown.
///
/// ```text
/// conns 37 [18 19] +120/s -98/s | in 1.17 MiB/s out 1.17 MiB/s | lag p99 80.13 µs max 410.4 µs, 0 stalls | http_request_duration 3402/s p50 21.02 µs p99 80.13 µs | reports dropped 0
/// ```
pub fn stats_line(prev: &MetricsSnapshot, cur: &MetricsSnapshot, wall: Duration) -> String {
    let secs = report_span(prev, cur).unwrap_or(wall).as_secs_f64().max(1e-9);
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
    let (p, c) = (prev.total(), cur.total());
    let per_shard: Vec<String> = cur.shards.iter().map(|s| s.stats.active.to_string()).collect();
    let mut line = format!(
        "conns {} [{}] +{:.0}/s -{:.0}/s | in {}/s out {}/s",
        c.active,
        per_shard.join(" "),
        rate(c.accepted, p.accepted),
        rate(c.closed_total(), p.closed_total()),
        format_bytes(rate(c.bytes_in, p.bytes_in) as u64),
        format_bytes(rate(c.bytes_out, p.bytes_out) as u64),
    );
    if c.shed > p.shed {
        // Accepted and closed at once at the per-shard cap: the first sign of overload.
        let at = line.find(" | ").unwrap_or(line.len());
        line.insert_str(at, &format!(" shed {:.0}/s", rate(c.shed, p.shed)));
    }
    let stalls = cur.stalls().saturating_sub(prev.stalls());
    match cur.latency_since(prev, REACTOR_LAG.name()) {
        Some(lag) if !lag.is_empty() => {
            let _ = write!(
                line,
                " | lag p99 {} max {}, {stalls} stalls",
                format_ns(lag.value_at_quantile(0.99) as f64),
                format_ns(lag.max() as f64)
            );
        }
        _ => {
            let _ = write!(line, " | {stalls} stalls");
        }
    }
    for name in cur
        .latency_names()
        .into_iter()
        .filter(|n| *n != REACTOR_LAG.name())
    {
        if let Some(h) = cur.latency_since(prev, name) {
            let _ = write!(line, " | {name} {:.0}/s", h.len() as f64 / secs);
            if !h.is_empty() {
                let _ = write!(
                    line,
                    " p50 {} p99 {}",
                    format_ns(h.value_at_quantile(0.5) as f64),
                    format_ns(h.value_at_quantile(0.99) as f64)
                );
            }
        }
    }
    let _ = write!(
        line,
        " | reports dropped {}",
        cur.dropped().saturating_sub(prev.dropped())
    );
    line
}

/// The mean time between the reports of `prev` and `cur`, over the shards that reported.
fn report_span(prev: &MetricsSnapshot, cur: &MetricsSnapshot) -> Option<Duration> {
    let spans: Vec<Duration> = prev
        .shards
        .iter()
        .zip(&cur.shards)
        .filter_map(|(p, c)| Some(c.made?.saturating_duration_since(p.made?)))
        .filter(|d| !d.is_zero())
        .collect();
    let n = u32::try_from(spans.len()).ok().filter(|n| *n > 0)?;
    Some(spans.iter().sum::<Duration>() / n)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::metrics::ShardMetrics;
    use crate::metrics::recorder::series;
    use crate::stats::StatsSnapshot;

    fn snap(
        accepted: [u64; 2],
        bytes: u64,
        latency: [&[u64]; 2],
        stalls: u64,
        made: Option<Instant>,
    ) -> MetricsSnapshot {
        let shards = (0..2)
            .map(|i| ShardMetrics {
                shard: i,
                core: i,
                stats: StatsSnapshot {
                    accepted: accepted[i],
                    active: accepted[i],
                    bytes_in: bytes,
                    bytes_out: bytes * 2,
                    ..Default::default()
                },
                stalls,
                latency: vec![series("reactor_lag", latency[0]), series("svc", latency[1])],
                counters: Vec::new(),
                gauges: Vec::new(),
                reports: 1,
                dropped: 0,
                made,
                age: None,
            })
            .collect();
        MetricsSnapshot { shards }
    }

    #[test]
    fn describes_the_interval_only() {
        let t0 = Instant::now();
        let prev = snap([1, 1], 0, [&[5_000_000], &[2_000]], 1, Some(t0));
        let cur = snap(
            [11, 21],
            500_000,
            [&[5_000_000, 40_000, 40_000], &[2_000, 30_000, 30_000, 1_000_000]],
            3,
            Some(t0 + Duration::from_secs(2)),
        );
        // The reports are 2 s apart, whatever the time between the snapshots.
        let line = stats_line(&prev, &cur, Duration::from_secs(7));
        assert!(
            line.starts_with("conns 32 [11 21] +15/s -0/s | in 488.28 KiB/s out 976.56 KiB/s"),
            "{line}"
        );
        // The 5 ms lag was before the interval: p99 and max come from the 40 µs wake-ups.
        assert!(line.contains("lag p99 40.03 µs max 40.03 µs, 4 stalls"), "{line}");
        assert!(line.contains("svc 3/s p50 30.02 µs p99 1.000 ms"), "{line}");
        assert!(line.ends_with("| reports dropped 0"), "{line}");
        assert!(!line.contains("shed"), "none shed: {line}");
        // Connections shed at the cap show beside the accept and close rates.
        let mut shedding = cur.clone();
        shedding.shards[0].stats.shed = 8;
        let line = stats_line(&prev, &shedding, Duration::from_secs(7));
        assert!(
            line.starts_with("conns 32 [11 21] +15/s -0/s shed 4/s | in "),
            "{line}"
        );
    }

    #[test]
    fn empty_snapshots_and_the_first_report() {
        let empty = MetricsSnapshot::default();
        let line = stats_line(&empty, &empty, Duration::ZERO);
        assert_eq!(
            line,
            "conns 0 [] +0/s -0/s | in 0 B/s out 0 B/s | 0 stalls | reports dropped 0"
        );
        // Before the first report the time between the snapshots is used.
        let first = snap([10, 10], 4_000, [&[], &[]], 0, Some(Instant::now()));
        let none = snap([0, 0], 0, [&[], &[]], 0, None);
        let line = stats_line(&none, &first, Duration::from_secs(4));
        assert!(
            line.starts_with("conns 20 [10 10] +5/s -0/s | in 1.95 KiB/s"),
            "{line}"
        );
    }
}
