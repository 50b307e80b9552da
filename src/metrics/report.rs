//! What a shard sends to the collector, and the sending end that never blocks the shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use super::collector::Shared;
use super::recorder::{self, LatencySeries};
use super::scalar::{self, Scalars};
use crate::stats::StatsSnapshot;

/// One shard's report: its counters (running totals), the current values of the counters
/// and gauges its code recorded, and the latency values recorded since its last report that
/// got through.
#[derive(Debug)]
pub(crate) struct ShardReport {
    pub(crate) shard: usize,
    /// When the shard made the report.
    pub(crate) at: Instant,
    pub(crate) stats: StatsSnapshot,
    /// Reactor stalls so far.
    pub(crate) stalls: u64,
    /// Values since the last report that got through.
    pub(crate) latency: Vec<LatencySeries>,
    /// The counters and gauges recorded on the shard, as they are now.
    pub(crate) scalars: Scalars,
}

/// A shard's end of the channel to the collector.
#[derive(Debug)]
pub(crate) struct ShardLink {
    shard: usize,
    tx: Sender<ShardReport>,
    shared: Arc<Shared>,
}

impl ShardLink {
    pub(crate) fn new(shard: usize, tx: Sender<ShardReport>, shared: Arc<Shared>) -> Self {
        Self { shard, tx, shared }
    }

    /// Sends the shard's counters and the latency values its thread recorded since the last
    /// report. If the collector's queue is full the report is dropped and counted, and its
    /// latency values go back to the shard's histograms for the next report: a slow collector
    /// costs freshness, never data, and never makes the shard wait.
    pub(crate) fn send(&self, stats: StatsSnapshot, stalls: u64, at: Instant) {
        match self.tx.try_send(self.report(stats, stalls, at)) {
            Ok(()) => {}
            Err(TrySendError::Full(report)) => self.dropped(&report),
            // The collector is gone (the engine is being torn down): nothing to report to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Sends the shard's last report, once it stopped serving: waits up to `wait` for room in
    /// the queue, so that the collector ends with the final counters.
    pub(crate) fn send_last(&self, stats: StatsSnapshot, stalls: u64, at: Instant, wait: Duration) {
        match self.tx.send_timeout(self.report(stats, stalls, at), wait) {
            Ok(()) | Err(SendTimeoutError::Disconnected(_)) => {}
            Err(SendTimeoutError::Timeout(report)) => self.dropped(&report),
        }
    }

    fn report(&self, stats: StatsSnapshot, stalls: u64, at: Instant) -> ShardReport {
        ShardReport {
            shard: self.shard,
            at,
            stats,
            stalls,
            latency: recorder::take_interval(),
            scalars: scalar::read(),
        }
    }

    fn dropped(&self, report: &ShardReport) {
        recorder::restore(&report.latency);
        if let Some(n) = self.shared.dropped.get(self.shard) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LatencyMetric;

    static M: LatencyMetric = LatencyMetric::new("m", "test metric");

    #[test]
    fn full_queue_drops_counts_and_keeps_values() {
        let shared = Arc::new(Shared::new(&[(0, 0)]));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let link = ShardLink::new(0, tx, shared.clone());
        recorder::install();
        M.record_ns(100);
        let stats = StatsSnapshot {
            accepted: 1,
            ..Default::default()
        };
        link.send(stats.clone(), 0, Instant::now());
        M.record_ns(200);
        link.send(stats.clone(), 0, Instant::now());
        assert_eq!(shared.dropped[0].load(Ordering::Relaxed), 1);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.latency[0].sum_ns, 100);
        M.record_ns(300);
        link.send(stats, 2, Instant::now());
        let second = rx.try_recv().unwrap();
        assert_eq!(second.stalls, 2);
        assert_eq!(
            (second.latency[0].histogram.len(), second.latency[0].sum_ns),
            (2, 500),
            "the dropped report's values travel with the next one"
        );
        link.send(StatsSnapshot::default(), 0, Instant::now());
        let wait = Duration::from_millis(20);
        link.send_last(StatsSnapshot::default(), 0, Instant::now(), wait);
        assert_eq!(
            shared.dropped[0].load(Ordering::Relaxed),
            2,
            "the last report waits, then drops"
        );
        drop(rx);
        link.send(StatsSnapshot::default(), 0, Instant::now());
        assert_eq!(
            shared.dropped[0].load(Ordering::Relaxed),
            2,
            "a closed channel is no drop"
        );
        recorder::uninstall();
    }
}
