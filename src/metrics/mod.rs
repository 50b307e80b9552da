//! Metrics: per-shard counters, gauges and latency histograms, merged by one collector
//! thread.
//!
//! ```text
//!   shard 0 (core 0)                  shard N
//!   ┌──────────────────────────┐      ┌─────────────┐
//!   │ counters (Cells)         │      │ ...         │
//!   │ histograms (thread-local)│      │             │
//!   │ lag probe ── every tick  │      │             │
//!   │ report ── every interval │      │             │
//!   └────────────┬─────────────┘      └──────┬──────┘
//!                │ try_send (full: drop and count, never wait)
//!                ▼                           ▼
//!        bounded crossbeam channel ──▶ collector thread ──▶ MetricsHandle::snapshot()
//!                                                          ├─ Prometheus text (/metrics)
//!                                                          └─ one-line summaries
//! ```
//!
//! Nothing on the connection path is shared between threads: a shard counts in plain
//! `Cell`s and records latencies into plain [`hdrhistogram::Histogram`]s of its own thread.
//! Every [`MetricsConfig::interval`](crate::config::MetricsConfig::interval) each shard
//! sends its counters (running totals) and the histogram values recorded since its last
//! report. The collector keeps each shard's latest view, and the histograms added up since
//! the engine started. If the collector falls behind, shards drop reports and count them;
//! the histogram values of a dropped report go out with the next one.
//!
//! Each shard also runs a lag probe: a timer task that measures how late the reactor wakes
//! it. Its values form the [`REACTOR_LAG`] histogram, and a wake-up later than
//! [`MetricsConfig::stall_threshold`](crate::config::MetricsConfig::stall_threshold) is a
//! stall, counted and logged with the shard and its duration.
//!
//! Protocols record their own latencies through a [`LatencyMetric`] (the
//! [`Http`](crate::protocols::Http) protocol records its request service time), and their
//! own counts through a [`CounterMetric`] (monotonic, `weft_<name>_total` in Prometheus) or
//! a [`GaugeMetric`] (a signed value that is set or moved, `weft_<name>`): `static`s that
//! each shard records into its own thread-local table, with no lock, atomic write or
//! allocation once a metric has taken its place there. Each report carries their current
//! values; the snapshot keeps each shard's and adds them up
//! ([`MetricsSnapshot::counter`], [`MetricsSnapshot::gauge`]). A metric may have one label
//! with a small fixed set of values, recorded by index. Outside a shard (no engine, or
//! metrics off) recording does nothing. The [`kv`](crate::protocols::kv) store counts its
//! keys, memory, expiries, evictions, `-OOM` refusals and commands so.
//!
//! ```
//! use weft::metrics::{CounterMetric, GaugeMetric};
//!
//! static REQUESTS: CounterMetric = CounterMetric::labeled(
//!     "cache_requests",
//!     "Cache requests, by kind.",
//!     "kind",
//!     &["get", "set"],
//! );
//! static ENTRIES: GaugeMetric = GaugeMetric::new("cache_entries", "Entries in the cache.");
//!
//! // In a protocol callback, on a shard:
//! REQUESTS.inc_at(0); // weft_cache_requests_total{shard="0",kind="get"}
//! ENTRIES.add(1); // weft_cache_entries{shard="0"}
//! ```
//!
//! The [`PrometheusExporter`] adds the process's own series (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`, read from `/proc/self` at each scrape) and
//! `weft_build_info{version="..."} 1`.
//!
//! ```no_run
//! use weft::{Engine, EngineConfig, protocols::Echo};
//!
//! let engine = Engine::builder(EngineConfig::default())
//!     .listen("127.0.0.1:7000".parse::<std::net::SocketAddr>()?, |_shard| Echo::factory())
//!     .start()?;
//! let metrics = engine.metrics().expect("metrics are on by default");
//! let total = metrics.snapshot().total();
//! println!("{} connections open", total.active);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod collector;
mod exporter;
mod hdr_log;
mod process;
pub(crate) use process::ProcessStats;
mod prometheus;
mod recorder;
mod report;
mod scalar;
mod stall;
mod summary;

pub use collector::{CollectorStall, MetricsHandle, MetricsSnapshot, ShardMetrics};
pub use exporter::PrometheusExporter;
pub use hdr_log::{LatencyLog, Reopener};
pub use prometheus::{CONTENT_TYPE, render as render_prometheus};
pub(crate) use prometheus::{render_serving, render_tls};
pub use recorder::{LatencyMetric, LatencySeries, Stopwatch, recording};
pub use scalar::{CounterMetric, GaugeMetric, ScalarSeries};
pub use summary::stats_line;

pub(crate) use collector::start as start_collector;
pub(crate) use report::ShardLink;
pub(crate) use stall::StallLog;

#[cfg(test)]
pub(crate) use recorder::take_interval;

/// Makes this thread record metrics: latencies, counters and gauges (a shard of an engine
/// with metrics on).
pub(crate) fn install_recorder() {
    recorder::install();
    scalar::install();
}

/// Stops recording metrics on this thread.
pub(crate) fn uninstall_recorder() {
    recorder::uninstall();
    scalar::uninstall();
}

/// How late each shard's reactor wakes its lag probe, in nanoseconds.
pub static REACTOR_LAG: LatencyMetric = LatencyMetric::new(
    "reactor_lag",
    "How late the shard's reactor woke its lag probe: time other work kept it from its timers and I/O.",
);
