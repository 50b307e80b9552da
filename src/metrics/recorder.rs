//! Latency histograms recorded on a shard: one plain `Histogram<u64>` per metric in a
//! thread-local, so a protocol records with no lock, no atomic and no handle to carry.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::proto::hdr::SIGFIG;

/// A new, empty histogram of nanoseconds at [`SIGFIG`] digits that starts small and grows
/// with the largest value recorded (most metrics never need the memory of an hour's range).
fn new_histogram() -> Histogram<u64> {
    // Three significant digits is in the range hdrhistogram accepts (0 to 5).
    #[allow(clippy::expect_used)]
    Histogram::new(SIGFIG).expect("constant histogram precision is valid")
}

/// A named latency histogram that code on a shard records into.
///
/// Declare one as a `static` and record from protocol callbacks; each shard keeps its own
/// histogram, the engine sends the interval's values to its collector, and the collector
/// merges them. Values are nanoseconds. On a thread that is not a shard of an engine with
/// metrics on (a unit test, say) recording does nothing.
///
/// # Examples
///
/// ```
/// use weft::metrics::{LatencyMetric, Stopwatch};
///
/// static LOOKUP: LatencyMetric = LatencyMetric::new("cache_lookup", "Time to look a key up.");
///
/// let watch = Stopwatch::start();
/// // ... the work being timed ...
/// LOOKUP.record_since(watch);
/// ```
#[derive(Debug)]
pub struct LatencyMetric {
    name: &'static str,
    help: &'static str,
    /// The label that tells a value's target apart (`None`: one series per shard).
    label: Option<&'static str>,
}

impl LatencyMetric {
    /// A metric named `name` (snake_case, without unit: Prometheus shows it as
    /// `weft_<name>_seconds`) described by `help`. Metrics with the same name share one
    /// histogram.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            label: None,
        }
    }

    /// A metric whose values are kept apart by a numbered target (a peer shard, a backend),
    /// recorded with [`record_for`](Self::record_for): Prometheus shows one series per
    /// recording shard and target, with the target under the label `label`; the other
    /// views (summaries, interval logs) merge the targets.
    pub const fn per_target(name: &'static str, help: &'static str, label: &'static str) -> Self {
        Self {
            name,
            help,
            label: Some(label),
        }
    }

    /// The metric's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records one value.
    pub fn record(&self, value: Duration) {
        self.record_ns(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&self, ns: u64) {
        self.record_target_ns(None, ns);
    }

    /// Records one value for `target` (on a metric made with [`per_target`](Self::per_target);
    /// on another the target is ignored).
    pub fn record_for(&self, target: usize, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.record_target_ns(self.label.map(|label| (label, target)), ns);
    }

    fn record_target_ns(&self, target: Option<(&'static str, usize)>, ns: u64) {
        RECORDER.with(|r| {
            // Busy only if a report is being taken on this thread right now: skip the value.
            if let Ok(mut r) = r.try_borrow_mut()
                && let Some(r) = r.as_mut()
            {
                r.record(self, target, ns);
            }
        });
    }

    /// Records the time since `watch` started (nothing if it did not read the clock).
    pub fn record_since(&self, watch: Stopwatch) {
        if let Some(start) = watch.0 {
            self.record(start.elapsed());
        }
    }
}

/// A start time for a [`LatencyMetric`]: reads the clock only on a thread that records.
/// The default stopwatch never started: recording since it does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stopwatch(Option<Instant>);

impl Stopwatch {
    /// Starts timing (reads the clock only if this thread records metrics).
    pub fn start() -> Self {
        Self(recording().then(Instant::now))
    }
}

/// True on a shard thread of an engine that collects metrics.
pub fn recording() -> bool {
    RECORDER.with(|r| r.try_borrow().is_ok_and(|r| r.is_some()))
}

/// One latency metric's values: a histogram in nanoseconds and their exact sum.
#[derive(Debug, Clone)]
pub struct LatencySeries {
    /// The metric's name.
    pub name: &'static str,
    /// The metric's description.
    pub help: &'static str,
    /// The label name and target these values are for, on a
    /// [per-target](LatencyMetric::per_target) metric.
    pub target: Option<(&'static str, usize)>,
    /// The values, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// The sum of the values, in nanoseconds.
    pub sum_ns: u64,
}

impl LatencySeries {
    /// An empty series for `metric`.
    pub(crate) fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            target: None,
            histogram: new_histogram(),
            sum_ns: 0,
        }
    }

    /// Adds `other`'s values (the same metric) into this series.
    pub fn merge(&mut self, other: &Self) {
        // Auto-resizing histograms accept any value: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

/// Adds `series` into the matching entry of `into` (by name and target), or appends it.
pub(crate) fn merge_into(into: &mut Vec<LatencySeries>, series: &LatencySeries) {
    match into
        .iter_mut()
        .find(|s| s.name == series.name && s.target == series.target)
    {
        Some(s) => s.merge(series),
        None => into.push(series.clone()),
    }
}

/// The histograms of one shard since its last report.
#[derive(Debug, Default)]
pub(crate) struct ShardRecorder {
    series: Vec<LatencySeries>,
}

impl ShardRecorder {
    fn record(&mut self, metric: &LatencyMetric, target: Option<(&'static str, usize)>, ns: u64) {
        let index = match self
            .series
            .iter()
            .position(|s| s.name == metric.name && s.target == target)
        {
            Some(i) => i,
            None => {
                let mut series = LatencySeries::new(metric.name, metric.help);
                series.target = target;
                self.series.push(series);
                self.series.len() - 1
            }
        };
        let s = &mut self.series[index];
        // Auto-resizing: only a value beyond i64::MAX / 2 can fail; clamp it.
        if s.histogram.record(ns).is_err() {
            s.histogram.saturating_record(ns);
        }
        s.sum_ns = s.sum_ns.saturating_add(ns);
    }
}

thread_local! {
    static RECORDER: RefCell<Option<ShardRecorder>> = const { RefCell::new(None) };
}

/// Makes this thread record latency metrics (a shard of an engine with metrics on).
pub(crate) fn install() {
    RECORDER.with(|r| *r.borrow_mut() = Some(ShardRecorder::default()));
}

/// Stops recording on this thread.
pub(crate) fn uninstall() {
    RECORDER.with(|r| *r.borrow_mut() = None);
}

/// The values recorded on this thread since the last call, as one series per metric that
/// has any; the live histograms start again empty.
pub(crate) fn take_interval() -> Vec<LatencySeries> {
    RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        let Some(r) = r.as_mut() else {
            return Vec::new();
        };
        r.series
            .iter_mut()
            .filter(|s| !s.histogram.is_empty())
            .map(|s| {
                let taken = s.clone();
                s.histogram.reset();
                s.sum_ns = 0;
                taken
            })
            .collect()
    })
}

/// Puts back values taken by [`take_interval`] that could not be reported, so that the next
/// report carries them.
pub(crate) fn restore(series: &[LatencySeries]) {
    RECORDER.with(|r| {
        if let Some(r) = r.borrow_mut().as_mut() {
            for s in series {
                merge_into(&mut r.series, s);
            }
        }
    });
}

/// A series of `values` (for tests).
#[cfg(test)]
pub(crate) fn series(name: &'static str, values: &[u64]) -> LatencySeries {
    let mut s = LatencySeries::new(name, "h");
    for &v in values {
        s.histogram.record(v).unwrap();
        s.sum_ns += v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: LatencyMetric = LatencyMetric::new("a", "metric a");
    static B: LatencyMetric = LatencyMetric::new("b", "metric b");

    #[test]
    fn records_only_where_installed() {
        // Test threads are fresh: nothing is installed.
        A.record_ns(5);
        assert!(!recording());
        assert!(Stopwatch::start().0.is_none());
        assert!(take_interval().is_empty());

        install();
        assert!(recording());
        A.record_ns(1_000);
        A.record(Duration::from_micros(3));
        B.record_since(Stopwatch::start());
        let taken = take_interval();
        assert_eq!(taken.len(), 2);
        let a = taken.iter().find(|s| s.name == "a").unwrap();
        assert_eq!((a.histogram.len(), a.sum_ns, a.help), (2, 4_000, "metric a"));
        assert!(take_interval().is_empty(), "the live histograms start again");

        restore(&taken);
        A.record_ns(10);
        let again = take_interval();
        let a = again.iter().find(|s| s.name == "a").unwrap();
        assert_eq!(
            (a.histogram.len(), a.sum_ns),
            (3, 4_010),
            "restored values are kept"
        );
        uninstall();
        A.record_ns(1);
        assert!(take_interval().is_empty());
    }

    #[test]
    fn per_target_values_stay_apart() {
        static CALL: LatencyMetric = LatencyMetric::per_target("call", "h", "target");
        install();
        CALL.record_for(1, Duration::from_micros(1));
        CALL.record_for(1, Duration::from_micros(2));
        CALL.record_for(3, Duration::from_micros(5));
        A.record_for(7, Duration::from_micros(1));
        let taken = take_interval();
        let count = |target| {
            let s = taken.iter().find(|s| s.name == "call" && s.target == target);
            s.map(|s| s.histogram.len())
        };
        assert_eq!(count(Some(("target", 1))), Some(2));
        assert_eq!(count(Some(("target", 3))), Some(1));
        let a = taken.iter().find(|s| s.name == "a").unwrap();
        assert_eq!(a.target, None, "a plain metric ignores the target");
        uninstall();
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        install();
        A.record(Duration::MAX);
        let taken = take_interval();
        assert_eq!(taken[0].histogram.len(), 1);
        uninstall();
    }
}
