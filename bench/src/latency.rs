//! Latency recording: one plain HdrHistogram per task or core, merged at the end.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded, in nanoseconds (longer samples are clamped to it).
const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 ns to 60 s.
    pub fn new() -> Self {
        // 1..60 s at 3 significant digits is a valid range: construction cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds");
        Self(h)
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(MAX_NS).clamp(1, MAX_NS);
        self.0.saturating_record(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    /// The highest sample in microseconds; 0 when empty.
    pub fn max_us(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.max() as f64 / 1e3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_reports_microseconds() {
        let mut a = Latency::new();
        for us in 1..=100 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Latency::new();
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        assert_eq!(a.count(), 101);
        assert!((a.quantile_us(0.5) - 51.0).abs() < 0.1);
        assert!((a.max_us() - 60e6).abs() / 60e6 < 0.001, "clamped to 60 s");
        assert_eq!(Latency::new().quantile_us(0.99), 0.0);
    }
}
