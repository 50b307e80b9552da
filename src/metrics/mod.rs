//! Metrics: per-shard counters and latency histograms, merged by one collector thread.
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
//! [`Http`](crate::protocols::Http) protocol records its request service time).
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
mod prometheus;
mod recorder;
mod report;
mod stall;
mod summary;

pub use collector::{CollectorStall, MetricsHandle, MetricsSnapshot, ShardMetrics};
pub use exporter::PrometheusExporter;
pub use hdr_log::LatencyLog;
pub(crate) use prometheus::render_tls;
pub use prometheus::{CONTENT_TYPE, render as render_prometheus};
pub use recorder::{LatencyMetric, LatencySeries, Stopwatch, recording};
pub use summary::stats_line;

pub(crate) use collector::start as start_collector;
pub(crate) use recorder::{install as install_recorder, uninstall as uninstall_recorder};
pub(crate) use report::ShardLink;
pub(crate) use stall::StallLog;

#[cfg(test)]
pub(crate) use recorder::take_interval;

/// How late each shard's reactor wakes its lag probe, in nanoseconds.
pub static REACTOR_LAG: LatencyMetric = LatencyMetric::new(
    "reactor_lag",
    "How late the shard's reactor woke its lag probe: time other work kept it from its timers and I/O.",
);
