//! Counters and gauges recorded on a shard: one plain `u64` per series in a thread-local
//! table, so that a protocol counts with no lock, no atomic write and no handle to carry.
//!
//! Every metric takes a fixed place (its slot) in every shard's table the first time any
//! thread records it; recording is then a thread-local access, a bounds check and an add.
//! A shard's report carries the current values of every series it recorded (running
//! totals, as the engine's own counters), so a dropped report loses nothing.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a slot holds until a metric claims it.
const UNASSIGNED: usize = usize::MAX;

/// The next free slot of every shard's table.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Whether a series only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// What a counter or gauge is: its name, help, label, and where its values live.
#[derive(Debug)]
struct Def {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// The label and its values: one series per value (`None`: one series).
    label: Option<(&'static str, &'static [&'static str])>,
    /// The first of the metric's slots in every shard's table, once assigned.
    slot: AtomicUsize,
}

impl Def {
    const fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        label: Option<(&'static str, &'static [&'static str])>,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            label,
            slot: AtomicUsize::new(UNASSIGNED),
        }
    }

    /// How many series (and slots) the metric has.
    fn width(&self) -> usize {
        self.label.map_or(1, |(_, values)| values.len())
    }

    /// The metric's first slot, assigned on first use.
    fn slot(&self) -> usize {
        match self.slot.load(Ordering::Relaxed) {
            UNASSIGNED => self.assign(),
            slot => slot,
        }
    }

    #[cold]
    fn assign(&self) -> usize {
        let fresh = NEXT_SLOT.fetch_add(self.width(), Ordering::Relaxed);
        // Two threads may race to assign: the first wins, the other's slots stay unused.
        match self
            .slot
            .compare_exchange(UNASSIGNED, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(won) => won,
        }
    }

    /// Applies `f` to the value of series `index` on this thread's table (nothing on a
    /// thread that does not record, or for an index past the label's values).
    #[inline]
    fn update(&'static self, index: usize, f: impl FnOnce(&mut u64)) {
        if index >= self.width() {
            return;
        }
        let slot = self.slot() + index;
        TABLE.with(|t| {
            // Busy only if a report is being taken on this thread right now: skip the value.
            if let Ok(mut t) = t.try_borrow_mut()
                && let Some(t) = t.as_mut()
            {
                match t.get_mut(slot) {
                    Some(Entry { def: Some(_), value }) => f(value),
                    _ => {
                        if let Some(value) = t.claim(self, slot) {
                            f(value);
                        }
                    }
                }
            }
        });
    }
}

/// The constructors and the name of a counter or gauge type.
macro_rules! metric_constructors {
    ($type:ident, $kind:expr, $what:literal, $at:ident) => {
        impl $type {
            #[doc = concat!("A ", $what, " named `name` (snake_case; see the type for how Prometheus")]
            #[doc = "shows it) described by `help`. Metrics with the same name add up."]
            pub const fn new(name: &'static str, help: &'static str) -> Self {
                Self(Def::new(name, help, $kind, None))
            }

            #[doc = concat!("A ", $what, " with one series per value of `label` (a small fixed set,")]
            #[doc = concat!("such as kinds of request), recorded with [`", stringify!($at), "`](Self::", stringify!($at), ")")]
            #[doc = "by the value's index in `values`."]
            pub const fn labeled(
                name: &'static str,
                help: &'static str,
                label: &'static str,
                values: &'static [&'static str],
            ) -> Self {
                Self(Def::new(name, help, $kind, Some((label, values))))
            }

            #[doc = concat!("The ", $what, "'s name.")]
            pub fn name(&self) -> &'static str {
                self.0.name
            }
        }
    };
}

/// A named monotonic counter that code on a shard adds to.
///
/// Declare one as a `static` and count from protocol callbacks; each shard keeps its own
/// total, reports it with its other counters, and the collector keeps every shard's; the
/// [`MetricsSnapshot`](super::MetricsSnapshot) adds them up. Prometheus shows
/// `weft_<name>_total` per shard (so name it without `_total`, and apart from weft's own
/// series). On a thread that is not a shard of an engine with metrics
/// on (a unit test, say) counting does nothing. A shard's series appears once it first
/// counts (`add(0)` shows it at zero).
///
/// # Examples
///
/// ```
/// use weft::metrics::CounterMetric;
///
/// static HITS: CounterMetric = CounterMetric::new("cache_hits", "Lookups that found their key.");
/// static OPS: CounterMetric =
///     CounterMetric::labeled("cache_ops", "Cache operations, by kind.", "op", &["get", "put"]);
///
/// HITS.inc();
/// OPS.add_at(1, 3); // op="put"
/// ```
#[derive(Debug)]
pub struct CounterMetric(Def);

metric_constructors!(CounterMetric, Kind::Counter, "counter", add_at);

impl CounterMetric {
    /// Adds `n`.
    #[inline]
    pub fn add(&'static self, n: u64) {
        self.add_at(0, n);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&'static self) {
        self.add_at(0, 1);
    }

    /// Adds `n` to the series of label value `index` (on a counter made with
    /// [`labeled`](Self::labeled); an index past its values counts nothing).
    #[inline]
    pub fn add_at(&'static self, index: usize, n: u64) {
        self.0.update(index, |v| *v = v.saturating_add(n));
    }

    /// Adds one to the series of label value `index`.
    #[inline]
    pub fn inc_at(&'static self, index: usize) {
        self.add_at(index, 1);
    }
}

/// A named gauge (a signed integer) that code on a shard sets or moves.
///
/// Declared and reported like a [`CounterMetric`]; each shard has its own value, the
/// [`MetricsSnapshot`](super::MetricsSnapshot) gives each shard's and their sum, and
/// Prometheus shows `weft_<name>` per shard (name it with its unit as a suffix, such as
/// `_bytes`). On a thread that is not a shard of an engine
/// with metrics on, it does nothing.
///
/// # Examples
///
/// ```
/// use weft::metrics::GaugeMetric;
///
/// static ENTRIES: GaugeMetric = GaugeMetric::new("cache_entries", "Entries in the cache.");
///
/// ENTRIES.set(10);
/// ENTRIES.add(-1);
/// ```
#[derive(Debug)]
pub struct GaugeMetric(Def);

metric_constructors!(GaugeMetric, Kind::Gauge, "gauge", set_at);

impl GaugeMetric {
    /// Sets this shard's value.
    #[inline]
    pub fn set(&'static self, value: i64) {
        self.set_at(0, value);
    }

    /// Adds `delta` (negative: subtracts) to this shard's value.
    #[inline]
    pub fn add(&'static self, delta: i64) {
        self.add_at(0, delta);
    }

    /// Sets the series of label value `index` (on a gauge made with
    /// [`labeled`](Self::labeled); an index past its values sets nothing).
    #[inline]
    pub fn set_at(&'static self, index: usize, value: i64) {
        self.0.update(index, |v| *v = value as u64);
    }

    /// Adds `delta` to the series of label value `index`.
    #[inline]
    pub fn add_at(&'static self, index: usize, delta: i64) {
        self.0
            .update(index, |v| *v = (*v as i64).saturating_add(delta) as u64);
    }
}

/// One counter or gauge series of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarSeries<T> {
    /// The metric's name.
    pub name: &'static str,
    /// The metric's description.
    pub help: &'static str,
    /// The label name and value of this series, on a labeled metric.
    pub label: Option<(&'static str, &'static str)>,
    /// The value now (a counter's running total).
    pub value: T,
}

/// A shard's counters and gauges at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scalars {
    pub(crate) counters: Vec<ScalarSeries<u64>>,
    pub(crate) gauges: Vec<ScalarSeries<i64>>,
}

/// One slot of a shard's table: the metric that claimed it, and its value's bits (a
/// gauge's `i64` as two's complement).
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    def: Option<(&'static Def, usize)>,
    value: u64,
}

/// The slots of one shard.
#[derive(Debug, Default)]
struct Table(Vec<Entry>);

impl Table {
    fn get_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.0.get_mut(slot)
    }

    /// The first record of `def` on this shard: claims its slots (every label value's, so
    /// that they all show, at zero); the value of `slot` (one of them).
    #[cold]
    fn claim(&mut self, def: &'static Def, slot: usize) -> Option<&mut u64> {
        let (first, end) = (def.slot(), def.slot() + def.width());
        if self.0.len() < end {
            self.0.resize(end, Entry::default());
        }
        for (i, e) in self.0.get_mut(first..end)?.iter_mut().enumerate() {
            e.def = Some((def, i));
        }
        self.0.get_mut(slot).map(|e| &mut e.value)
    }

    /// Every claimed series; two metrics of the same name and label value add up.
    fn read(&self) -> Scalars {
        let mut out = Scalars::default();
        for e in &self.0 {
            let Some((def, i)) = e.def else { continue };
            let label = def
                .label
                .and_then(|(label, values)| Some((label, *values.get(i)?)));
            match def.kind {
                Kind::Counter => add_series(&mut out.counters, def, label, e.value, u64::saturating_add),
                Kind::Gauge => add_series(&mut out.gauges, def, label, e.value as i64, i64::saturating_add),
            }
        }
        out
    }
}

/// Adds `value` to the series of `def` and `label` in `into`, or appends it.
fn add_series<T: Copy>(
    into: &mut Vec<ScalarSeries<T>>,
    def: &Def,
    label: Option<(&'static str, &'static str)>,
    value: T,
    add: fn(T, T) -> T,
) {
    match into.iter_mut().find(|s| s.name == def.name && s.label == label) {
        Some(s) => s.value = add(s.value, value),
        None => into.push(ScalarSeries {
            name: def.name,
            help: def.help,
            label,
            value,
        }),
    }
}

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// Makes this thread record counters and gauges (a shard of an engine with metrics on).
pub(crate) fn install() {
    TABLE.with(|t| *t.borrow_mut() = Some(Table::default()));
}

/// Stops recording on this thread.
pub(crate) fn uninstall() {
    TABLE.with(|t| *t.borrow_mut() = None);
}

/// The values of every series this thread recorded.
pub(crate) fn read() -> Scalars {
    TABLE.with(|t| t.borrow().as_ref().map(Table::read).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUESTS: CounterMetric = CounterMetric::new("requests", "Requests.");
    static REQUESTS_TOO: CounterMetric = CounterMetric::new("requests", "Requests.");
    static BY_KIND: CounterMetric = CounterMetric::labeled("ops", "Ops.", "op", &["get", "put"]);
    static DEPTH: GaugeMetric = GaugeMetric::new("depth", "Depth.");

    fn counter(s: &Scalars, name: &str, label: Option<&str>) -> Option<u64> {
        let s = s
            .counters
            .iter()
            .find(|c| c.name == name && c.label.map(|l| l.1) == label);
        s.map(|s| s.value)
    }

    #[test]
    fn records_only_where_installed() {
        REQUESTS.inc();
        DEPTH.set(3);
        assert_eq!(read(), Scalars::default());

        install();
        REQUESTS.add(2);
        REQUESTS.inc();
        REQUESTS_TOO.add(10);
        DEPTH.set(5);
        DEPTH.add(-7);
        let s = read();
        assert_eq!(counter(&s, "requests", None), Some(13), "same name: one series");
        assert_eq!(s.counters.len(), 1);
        assert_eq!(s.gauges.len(), 1);
        assert_eq!((s.gauges[0].name, s.gauges[0].value), ("depth", -2));
        assert_eq!(read(), s, "reading resets nothing: counters are running totals");
        uninstall();
        REQUESTS.inc();
        assert_eq!(read(), Scalars::default());
    }

    #[test]
    fn labeled_series_all_show_once_one_counts() {
        install();
        BY_KIND.inc_at(1);
        BY_KIND.add_at(1, 4);
        BY_KIND.add_at(2, 100);
        let s = read();
        assert_eq!(counter(&s, "ops", Some("get")), Some(0));
        assert_eq!(counter(&s, "ops", Some("put")), Some(5));
        assert_eq!(s.counters.len(), 2, "an index past the values counts nothing");
        assert_eq!(s.counters[0].label, Some(("op", "get")));
        REQUESTS.add(u64::MAX);
        REQUESTS.add(1);
        assert_eq!(counter(&read(), "requests", None), Some(u64::MAX), "saturates");
        uninstall();
    }
}
