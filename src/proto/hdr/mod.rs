//! Latency histograms: recording in nanoseconds, percentile summaries, HdrHistogram's text
//! (`.hgrm`) and interval-log (`.hlog`) formats, merging, and SVG plots.
//!
//! Everything here is I/O-free apart from the caller's reader or writer. Values are recorded
//! in **nanoseconds** (HdrHistogram's log tools assume so) at 3 significant digits, and are
//! printed in µs, ms or s; the byte counts reported beside them in B, KiB, MiB or GiB.

pub mod foreign;
pub mod hgrm;
pub mod log;
pub mod svg;
pub mod timeline;
pub mod unit;

pub use unit::Unit;

use hdrhistogram::Histogram;

/// A latency histogram: values in nanoseconds.
pub type Latency = Histogram<u64>;

/// Highest value a [`new_histogram`] tracks without resizing: one hour, in nanoseconds.
/// Larger values are clamped to it.
pub const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Significant decimal digits kept for every value.
pub const SIGFIG: u8 = 3;

/// A histogram for latencies from 1 ns to [`HIGHEST_NS`] at [`SIGFIG`] digits.
pub fn new_histogram() -> Latency {
    // Constant bounds that hdrhistogram accepts (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("valid constant histogram bounds")
}

/// A histogram that grows to hold whatever is added to it: the target of merges of
/// histograms read from files, whose bounds are the writer's choice.
pub fn new_merge_target() -> Latency {
    let mut h = new_histogram();
    h.auto(true);
    h
}

/// Adds `from` into `into`. `into` should come from [`new_merge_target`] when `from`'s
/// bounds are not known; then this cannot fail. Returns false if values were lost.
pub fn merge(into: &mut Latency, from: &Latency) -> bool {
    into.add(from).is_ok()
}

/// The percentile levels of every latency table, with their labels.
pub const LEVELS: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// The summary of one histogram: count, mean, standard deviation, the [`LEVELS`], the
/// minimum and the maximum, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean, in ns.
    pub mean: f64,
    /// Standard deviation, in ns.
    pub stdev: f64,
    /// Smallest value (the lowest value equivalent to it at the histogram's precision), in ns.
    pub min: u64,
    /// Value at each of [`LEVELS`], in ns.
    pub levels: [u64; LEVELS.len()],
    /// Largest value (the highest value equivalent to it at the histogram's precision), in ns.
    pub max: u64,
}

impl Summary {
    /// Summarises `h` (all zero when it is empty).
    pub fn of(h: &Latency) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            stdev: h.stdev(),
            min: h.min(),
            levels: LEVELS.map(|(_, q)| h.value_at_quantile(q)),
            max: h.max(),
        }
    }

    /// The value at `label` (`p50`, `p99.9`, `max`...), if it is one of this summary's.
    pub fn get(&self, label: &str) -> Option<u64> {
        if label == "max" {
            return Some(self.max);
        }
        LEVELS
            .iter()
            .position(|(l, _)| *l == label)
            .map(|i| self.levels[i])
    }

    /// `(label, value in ns)` for every level and then `max`.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LEVELS
            .iter()
            .zip(self.levels)
            .map(|((l, _), v)| (*l, v))
            .chain(std::iter::once(("max", self.max)))
    }
}

/// The percentile rows of a table (`--percentiles 50,99.9`): `(label, quantile)` pairs such
/// as `("p99.9", 0.999)`, in the order given. The default is [`LEVELS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Percentiles(Vec<(String, f64)>);

/// A `--percentiles` list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad percentile {0:?}: give percents from 0 to 100 separated by commas, as in 50,90,99,99.9")]
pub struct BadPercentile(String);

impl Default for Percentiles {
    fn default() -> Self {
        Self(LEVELS.iter().map(|(l, q)| ((*l).to_owned(), *q)).collect())
    }
}

impl std::str::FromStr for Percentiles {
    type Err = BadPercentile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rows = s
            .split(',')
            .map(|p| {
                let p = p.trim();
                match p.parse::<f64>() {
                    Ok(v) if (0.0..=100.0).contains(&v) => Ok((format!("p{v}"), v / 100.0)),
                    _ => Err(BadPercentile(p.to_owned())),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(rows))
    }
}

impl Percentiles {
    /// `(label, value)` of each percentile of `h` (0 for an empty histogram).
    pub fn of<'a>(&'a self, h: &'a Latency) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.0.iter().map(move |(label, q)| {
            let v = if h.is_empty() { 0 } else { h.value_at_quantile(*q) };
            (label.as_str(), v)
        })
    }
}

/// Formats nanoseconds with 4 significant digits in the largest unit that keeps the number
/// at 1 or above: `850 ns`, `12.34 µs`, `1.235 ms`, `2.000 s`. Four digits show everything a
/// 3-significant-digit histogram knows.
pub fn format_ns(ns: f64) -> String {
    let ns = ns.max(0.0);
    if ns < 999.5 {
        return format!("{ns:.0} ns");
    }
    // The first unit in which the value, rounded to 4 digits, stays below 1000.
    let (value, unit) = [(1e3, "µs"), (1e6, "ms")]
        .into_iter()
        .map(|(scale, unit)| (ns / scale, unit))
        .find(|(v, _)| *v < 999.95)
        .unwrap_or((ns / 1e9, "s"));
    let decimals = if value < 9.9995 {
        3
    } else if value < 99.995 {
        2
    } else if value < 999.95 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

/// Bytes in B, KiB, MiB or GiB with 2 decimals.
pub(crate) fn format_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[unit])
    }
}

/// Parses what [`format_ns`] prints back into nanoseconds (for tests and scripts).
pub fn parse_ns(s: &str) -> Option<f64> {
    let (num, unit) = s.trim().split_once(' ')?;
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_units_and_digits() {
        assert_eq!(format_ns(0.0), "0 ns");
        assert_eq!(format_ns(850.0), "850 ns");
        assert_eq!(format_ns(1_000.0), "1.000 µs");
        assert_eq!(format_ns(12_345.0), "12.35 µs");
        assert_eq!(format_ns(123_456.0), "123.5 µs");
        assert_eq!(format_ns(1_234_567.0), "1.235 ms");
        assert_eq!(format_ns(999_999_999.0), "1.000 s");
        assert_eq!(format_ns(9_999_600.0), "10.00 ms");
        assert_eq!(format_ns(999.6), "1.000 µs");
        assert_eq!(format_ns(2e9), "2.000 s");
        for v in [850.0, 12_345.0, 1_234_567.0, 2e9] {
            let back = parse_ns(&format_ns(v)).unwrap();
            assert!((back - v).abs() / v < 5e-4, "{v} -> {back}");
        }
        assert_eq!(parse_ns("1.5 parsecs"), None);
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(5 * 1024 * 1024 / 2), "2.50 MiB");
    }

    #[test]
    fn summary_of_uniform_values() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        assert!(h.equivalent(s.get("p50").unwrap(), 5_000_000));
        assert!(h.equivalent(s.get("p99").unwrap(), 9_900_000));
        assert!(h.equivalent(s.max, 10_000_000));
        assert_eq!(s.rows().count(), LEVELS.len() + 1);
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
    }

    #[test]
    fn percentiles_parse_and_label() {
        let p: Percentiles = "50, 99.9,99.999".parse().unwrap();
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let rows: Vec<(&str, u64)> = p.of(&h).collect();
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ["p50", "p99.9", "p99.999"]
        );
        assert!(h.equivalent(rows[1].1, 99_900));
        assert!(
            "50,abc"
                .parse::<Percentiles>()
                .unwrap_err()
                .to_string()
                .contains("\"abc\"")
        );
        assert!("101".parse::<Percentiles>().is_err());
        assert!("".parse::<Percentiles>().is_err());
        let default = Percentiles::default();
        let default: Vec<&str> = default.0.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(default, LEVELS.map(|l| l.0));
        assert_eq!(
            Percentiles::default().of(&new_histogram()).map(|r| r.1).max(),
            Some(0)
        );
    }

    #[test]
    fn summary_has_min_and_stdev() {
        let mut h = new_histogram();
        for v in [10u64, 20, 30] {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.min, 10);
        assert!((s.stdev - h.stdev()).abs() < 1e-9 && s.stdev > 8.0);
    }

    #[test]
    fn merge_target_takes_any_bounds() {
        let mut small = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        small.record(999).unwrap();
        let mut big = new_histogram();
        big.record(HIGHEST_NS).unwrap();
        let mut target = new_merge_target();
        assert!(merge(&mut target, &small));
        assert!(merge(&mut target, &big));
        assert_eq!(target.len(), 2);
    }
}
