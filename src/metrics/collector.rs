//! The collector: one thread that receives the shards' reports, merges them, and serves
//! snapshots to any thread through a [`MetricsHandle`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;

use super::recorder::{LatencySeries, merge_into};
use super::report::{ShardLink, ShardReport};
use super::scalar::ScalarSeries;
use crate::stats::StatsSnapshot;

/// One shard's latest view, as the collector last heard it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardMetrics {
    /// Shard index.
    pub shard: usize,
    /// The CPU core the shard runs on.
    pub core: usize,
    /// The shard's counters at its last report (running totals).
    pub stats: StatsSnapshot,
    /// Reactor stalls so far: wake-ups of the lag probe later than the stall threshold.
    pub stalls: u64,
    /// Latency histograms since the engine started, one per metric, by first appearance.
    /// Reactor lag is the one named [`REACTOR_LAG`](super::REACTOR_LAG).
    pub latency: Vec<LatencySeries>,
    /// The [counters](super::CounterMetric) the shard's code recorded: running totals, one
    /// per metric and label value, by first appearance.
    pub counters: Vec<ScalarSeries<u64>>,
    /// The [gauges](super::GaugeMetric) the shard's code recorded, as of its last report.
    pub gauges: Vec<ScalarSeries<i64>>,
    /// Reports the collector received from this shard.
    pub reports: u64,
    /// Reports the shard dropped because the collector's queue was full.
    pub dropped: u64,
    /// When the shard made the report this view comes from; `None` before its first.
    pub made: Option<Instant>,
    /// How long before the snapshot the shard made that report.
    pub age: Option<Duration>,
}

/// The merged metrics of every shard at one moment.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Per-shard views, by shard index.
    pub shards: Vec<ShardMetrics>,
}

impl MetricsSnapshot {
    /// The counters of all shards added up.
    pub fn total(&self) -> StatsSnapshot {
        StatsSnapshot::sum(self.shards.iter().map(|s| &s.stats))
    }

    /// The latency metric `name` merged over all shards, if any shard recorded it.
    pub fn latency(&self, name: &str) -> Option<LatencySeries> {
        let mut merged: Option<LatencySeries> = None;
        for s in self
            .shards
            .iter()
            .flat_map(|s| &s.latency)
            .filter(|s| s.name == name)
        {
            match merged.as_mut() {
                Some(m) => m.merge(s),
                None => merged = Some(s.clone()),
            }
        }
        merged
    }

    /// The values of latency metric `name` recorded between `earlier` and this snapshot,
    /// merged over all shards (for interval logs and per-interval percentiles).
    pub fn latency_since(&self, earlier: &Self, name: &str) -> Option<Histogram<u64>> {
        let now = self.latency(name)?.histogram;
        let Some(before) = earlier.latency(name) else {
            return Some(now);
        };
        let mut delta = now.clone();
        // The collector's histograms only grow, so `before` fits in `now`; if that ever
        // fails, give everything rather than a half-subtracted histogram.
        Some(if delta.subtract(&before.histogram).is_ok() {
            delta
        } else {
            now
        })
    }

    /// The names of every latency metric any shard recorded, in first-seen order.
    pub fn latency_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for s in self.shards.iter().flat_map(|s| &s.latency) {
            if !names.contains(&s.name) {
                names.push(s.name);
            }
        }
        names
    }

    /// Counter `name` added up over all shards (and label values), if any shard recorded it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        sum_series(self.shards.iter().flat_map(|s| &s.counters), name, None)
    }

    /// The series of counter `name` with label value `value`, added up over all shards.
    pub fn counter_with(&self, name: &str, value: &str) -> Option<u64> {
        sum_series(self.shards.iter().flat_map(|s| &s.counters), name, Some(value))
    }

    /// Gauge `name` added up over all shards (and label values), if any shard recorded it;
    /// each shard's own is in its [`ShardMetrics::gauges`].
    pub fn gauge(&self, name: &str) -> Option<i64> {
        sum_series(self.shards.iter().flat_map(|s| &s.gauges), name, None)
    }

    /// The series of gauge `name` with label value `value`, added up over all shards.
    pub fn gauge_with(&self, name: &str, value: &str) -> Option<i64> {
        sum_series(self.shards.iter().flat_map(|s| &s.gauges), name, Some(value))
    }

    /// Reactor stalls on all shards.
    pub fn stalls(&self) -> u64 {
        self.shards.iter().map(|s| s.stalls).sum()
    }

    /// Reports dropped by all shards.
    pub fn dropped(&self) -> u64 {
        self.shards.iter().map(|s| s.dropped).sum()
    }
}

/// The sum of the series named `name` (with label value `value`, if given); `None` if there
/// is none.
fn sum_series<'a, T>(
    series: impl Iterator<Item = &'a ScalarSeries<T>>,
    name: &str,
    value: Option<&str>,
) -> Option<T>
where
    T: Copy + std::iter::Sum<T> + 'a,
{
    let mut matching = series
        .filter(|s| s.name == name && value.is_none_or(|v| s.label.is_some_and(|(_, l)| l == v)))
        .map(|s| s.value)
        .peekable();
    matching.peek()?;
    Some(matching.sum())
}

/// What the collector, the shards' links and the handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Reports dropped, by shard: written by a shard only when its report is dropped.
    pub(crate) dropped: Vec<AtomicU64>,
    /// Held by the collector while it applies a report; a test holds it to stall the collector.
    gate: Mutex<()>,
}

#[derive(Debug)]
struct State {
    shards: Vec<ShardMetrics>,
}

impl Shared {
    /// State for shards `(index, core)`.
    pub(crate) fn new(shards: &[(usize, usize)]) -> Self {
        let views = shards
            .iter()
            .map(|&(shard, core)| ShardMetrics {
                shard,
                core,
                stats: StatsSnapshot::default(),
                stalls: 0,
                latency: Vec::new(),
                counters: Vec::new(),
                gauges: Vec::new(),
                reports: 0,
                dropped: 0,
                made: None,
                age: None,
            })
            .collect();
        Self {
            state: Mutex::new(State { shards: views }),
            dropped: shards.iter().map(|_| AtomicU64::new(0)).collect(),
            gate: Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a reader panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merges one report into its shard's view.
    pub(crate) fn apply(&self, report: ShardReport) {
        let mut state = self.state();
        let Some(view) = state.shards.get_mut(report.shard) else {
            return;
        };
        view.stats = report.stats;
        view.stalls = report.stalls;
        view.reports += 1;
        for series in &report.latency {
            merge_into(&mut view.latency, series);
        }
        // Running values, like the stats: the newer report replaces.
        view.counters = report.scalars.counters;
        view.gauges = report.scalars.gauges;
        view.made = Some(report.at);
    }

    /// A copy of every shard's view, as of `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> MetricsSnapshot {
        let mut shards = self.state().shards.clone();
        for (i, view) in shards.iter_mut().enumerate() {
            view.dropped = self.dropped.get(i).map_or(0, |n| n.load(Ordering::Relaxed));
            view.age = view.made.map(|at| now.saturating_duration_since(at));
        }
        MetricsSnapshot { shards }
    }
}

/// Reads the merged metrics of a running (or stopped) engine from any thread.
///
/// Cheap to clone; every [`snapshot`](Self::snapshot) copies the collector's current views.
/// The views are as fresh as the shards' last reports (see
/// [`MetricsConfig::interval`](crate::config::MetricsConfig::interval)).
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    shared: Arc<Shared>,
}

impl MetricsHandle {
    /// The current merged view of every shard: all zeros until the shards' first reports, one
    /// interval after the start. For a shard's counters right now, read
    /// [`shard::counters`](crate::shard::counters) on the shard.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.shared.snapshot(Instant::now())
    }

    /// Test hook: stalls the collector until the guard is dropped. Shards go on serving and
    /// count the reports they drop. Release it before [`Engine::join`](crate::Engine::join),
    /// which waits for the collector to apply the last reports.
    #[doc(hidden)]
    pub fn stall_collector(&self) -> CollectorStall<'_> {
        CollectorStall {
            _gate: self.shared.gate.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// Keeps the collector stalled while it lives (see [`MetricsHandle::stall_collector`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct CollectorStall<'a> {
    _gate: MutexGuard<'a, ()>,
}

/// A started collector: its thread, the handle readers use, and one link per shard.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) thread: JoinHandle<()>,
    pub(crate) handle: MetricsHandle,
    pub(crate) links: Vec<ShardLink>,
}

/// Starts the collector for shards `(index, core)`, with room for `queue_per_shard` reports
/// from each. The thread ends once every link is dropped and the queue is drained.
pub(crate) fn start(shards: &[(usize, usize)], queue_per_shard: usize) -> std::io::Result<Collector> {
    let shared = Arc::new(Shared::new(shards));
    let (tx, rx) = crossbeam_channel::bounded(queue_per_shard.max(1) * shards.len().max(1));
    let links = shards
        .iter()
        .map(|&(index, _)| ShardLink::new(index, tx.clone(), shared.clone()))
        .collect();
    drop(tx);
    let collecting = shared.clone();
    let thread = std::thread::Builder::new()
        .name("weft-metrics".into())
        .spawn(move || collect(&rx, &collecting))?;
    Ok(Collector {
        thread,
        handle: MetricsHandle { shared },
        links,
    })
}

fn collect(rx: &Receiver<ShardReport>, shared: &Shared) {
    for report in rx {
        let _gate = shared.gate.lock().unwrap_or_else(PoisonError::into_inner);
        shared.apply(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::recorder::series;
    use crate::metrics::scalar::Scalars;

    fn report(shard: usize, accepted: u64, latency: Vec<LatencySeries>, at: Instant) -> ShardReport {
        ShardReport {
            shard,
            at,
            stats: StatsSnapshot {
                accepted,
                active: accepted,
                ..Default::default()
            },
            stalls: shard as u64,
            latency,
            scalars: Scalars::default(),
        }
    }

    #[test]
    fn merges_reports_and_keeps_per_shard_views() {
        let shared = Shared::new(&[(0, 4), (1, 5)]);
        let t0 = Instant::now();
        let empty = shared.snapshot(t0);
        assert_eq!(empty.shards.len(), 2);
        assert!(empty.shards[0].age.is_none());
        assert!(empty.latency("x").is_none());

        shared.apply(report(0, 3, vec![series("x", &[10, 20])], t0));
        shared.apply(report(1, 4, vec![series("x", &[30]), series("y", &[1])], t0));
        // Counters are running totals: the newer report replaces; histograms are deltas: added.
        shared.apply(report(0, 5, vec![series("x", &[40])], t0));
        shared.apply(report(7, 100, Vec::new(), t0));
        shared.dropped[1].fetch_add(2, Ordering::Relaxed);

        let snap = shared.snapshot(t0 + Duration::from_millis(5));
        assert_eq!(snap.total().accepted, 9);
        assert_eq!(snap.shards[0].stats.accepted, 5);
        assert_eq!((snap.shards[0].core, snap.shards[1].core), (4, 5));
        assert_eq!(snap.shards[0].reports, 2);
        assert_eq!(snap.shards[0].age, Some(Duration::from_millis(5)));
        assert_eq!((snap.stalls(), snap.dropped()), (1, 2));
        let x = snap.latency("x").unwrap();
        assert_eq!((x.histogram.len(), x.sum_ns), (4, 100));
        assert_eq!(snap.shards[0].latency[0].histogram.len(), 3);
        assert_eq!(snap.latency_names(), vec!["x", "y"]);
    }

    fn scalar<T>(name: &'static str, label: Option<&'static str>, value: T) -> ScalarSeries<T> {
        ScalarSeries {
            name,
            help: "h",
            label: label.map(|l| ("kind", l)),
            value,
        }
    }

    #[test]
    fn counters_add_up_and_gauges_stay_per_shard() {
        let shared = Shared::new(&[(0, 0), (1, 1)]);
        let t0 = Instant::now();
        let with = |shard, hits, depth| {
            let mut r = report(shard, 0, Vec::new(), t0);
            r.scalars = Scalars {
                counters: vec![scalar("ops", Some("get"), hits), scalar("ops", Some("put"), 1)],
                gauges: vec![scalar("depth", None, depth)],
            };
            r
        };
        shared.apply(with(0, 5, -2));
        shared.apply(with(1, 7, 10));
        // Running values: the newer report replaces the older.
        shared.apply(with(0, 6, 3));
        let snap = shared.snapshot(t0);
        assert_eq!(snap.counter("ops"), Some(6 + 7 + 2));
        assert_eq!(snap.counter_with("ops", "get"), Some(13));
        assert_eq!(snap.counter_with("ops", "nope"), None);
        assert_eq!(snap.counter("missing"), None);
        assert_eq!(snap.gauge("depth"), Some(13));
        assert_eq!(snap.shards[0].gauges[0].value, 3);
        assert_eq!(
            snap.gauge_with("depth", "x"),
            None,
            "an unlabeled gauge has no label value"
        );
    }

    #[test]
    fn collector_thread_applies_and_stalls_on_the_gate() {
        let c = start(&[(0, 0)], 1).unwrap();
        let stall = c.handle.stall_collector();
        let link = &c.links[0];
        for _ in 0..4 {
            link.send(StatsSnapshot::default(), 0, Instant::now());
        }
        // One report is held by the stalled collector, one waits in the queue; the rest drop.
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.handle.snapshot().dropped() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(c.handle.snapshot().dropped() >= 2);
        assert_eq!(c.handle.snapshot().shards[0].reports, 0);
        drop(stall);
        let handle = c.handle.clone();
        drop(c.links);
        c.thread.join().unwrap();
        let snap = handle.snapshot();
        assert_eq!(snap.shards[0].reports + snap.dropped(), 4);
    }
}
