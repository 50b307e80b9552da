//! Reactor stall reports, Seastar style: every late wake-up over the threshold is counted,
//! and logged at most once per interval with what was held back since the last line.

use std::time::{Duration, Instant};

/// Counts reactor stalls and rate-limits their log lines.
#[derive(Debug)]
pub(crate) struct StallLog {
    threshold: Duration,
    interval: Duration,
    stalls: u64,
    last_line: Option<Instant>,
    /// Stalls not logged since the last line, and the worst of them.
    held: u64,
    worst_held: Duration,
}

impl StallLog {
    /// Stalls are wake-ups `threshold` or more late; one line per `interval` at most.
    pub(crate) fn new(threshold: Duration, interval: Duration) -> Self {
        Self {
            threshold,
            interval,
            stalls: 0,
            last_line: None,
            held: 0,
            worst_held: Duration::ZERO,
        }
    }

    /// Stalls so far.
    pub(crate) fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Observes a wake-up `late` at `now`; returns the line to log, if any.
    pub(crate) fn observe(&mut self, late: Duration, now: Instant) -> Option<String> {
        if late < self.threshold {
            return None;
        }
        self.stalls += 1;
        if self
            .last_line
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
        {
            self.held += 1;
            self.worst_held = self.worst_held.max(late);
            return None;
        }
        let mut line = format!(
            "reactor stalled for {:.1} ms (threshold {} ms)",
            late.as_secs_f64() * 1e3,
            self.threshold.as_millis()
        );
        if self.held > 0 {
            line.push_str(&format!(
                "; {} more stall(s) since the last report, the worst {:.1} ms",
                self.held,
                self.worst_held.as_secs_f64() * 1e3
            ));
        }
        self.last_line = Some(now);
        self.held = 0;
        self.worst_held = Duration::ZERO;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_stall_and_logs_one_per_interval() {
        let ms = Duration::from_millis;
        let mut log = StallLog::new(ms(25), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(log.observe(ms(24), t0).is_none());
        let first = log.observe(ms(40), t0).unwrap();
        assert_eq!(first, "reactor stalled for 40.0 ms (threshold 25 ms)");
        assert!(log.observe(ms(90), t0 + ms(100)).is_none());
        assert!(log.observe(ms(30), t0 + ms(200)).is_none());
        let later = log.observe(ms(26), t0 + Duration::from_secs(11)).unwrap();
        assert!(later.contains("26.0 ms"), "{later}");
        assert!(
            later.contains("2 more stall(s)") && later.contains("worst 90.0 ms"),
            "{later}"
        );
        assert_eq!(log.stalls(), 4);
        let quiet = log.observe(ms(30), t0 + Duration::from_secs(22)).unwrap();
        assert!(!quiet.contains("more"), "{quiet}");
    }
}
