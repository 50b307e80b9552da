//! The main thread's side of the per-core measurements: each core reports every interval;
//! once every core has reported an interval (or stopped) the merged interval is ready, in
//! order, and joins the run's totals.

use std::collections::BTreeMap;
use std::time::Duration;

use super::recorder::Sample;

/// Bytes moved by a core over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Bytes written to the target.
    pub sent: u64,
    /// Bytes read from the target.
    pub received: u64,
}

impl Bytes {
    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.received += other.received;
    }
}

/// What one core measured over one interval, or what all cores did, merged.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// The interval's number, from 0 at the end of the warm-up.
    pub index: u64,
    /// Start, after the end of the warm-up.
    pub start: Duration,
    /// End, after the end of the warm-up.
    pub end: Duration,
    /// Latencies, responses and errors.
    pub sample: Sample,
    /// Bytes moved.
    pub bytes: Bytes,
}

impl Interval {
    /// The interval's length.
    pub fn length(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// Responses per second over the interval.
    pub fn rate(&self) -> f64 {
        let secs = self.length().as_secs_f64();
        if secs > 0.0 {
            self.sample.requests as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: &Self) {
        self.start = self.start.min(other.start);
        self.end = self.end.max(other.end);
        self.sample.merge(&other.sample);
        self.bytes.merge(other.bytes);
    }
}

/// Merges the cores' interval reports.
#[derive(Debug)]
pub struct Aggregator {
    /// Per core: has it stopped reporting?
    stopped: Vec<bool>,
    /// Intervals some core has reported, with which cores have.
    pending: BTreeMap<u64, (Vec<bool>, Interval)>,
    /// Everything emitted so far, merged.
    total: Interval,
    /// Every interval below this has been emitted.
    next: u64,
}

impl Aggregator {
    /// An aggregator for `cores` reporting cores.
    pub fn new(cores: usize) -> Self {
        Self {
            stopped: vec![false; cores],
            pending: BTreeMap::new(),
            total: Interval::default(),
            next: 0,
        }
    }

    /// Takes `core`'s report; returns the intervals now complete, oldest first.
    pub fn add(&mut self, core: usize, report: Interval) -> Vec<Interval> {
        if report.index < self.next {
            // Too late for its interval (not expected: cores report in order); still count it.
            self.total.merge(&report);
            return Vec::new();
        }
        let cores = self.stopped.len();
        let (seen, merged) = self.pending.entry(report.index).or_insert_with(|| {
            let empty = Interval {
                index: report.index,
                start: report.start,
                end: report.end,
                ..Interval::default()
            };
            (vec![false; cores], empty)
        });
        if let Some(s) = seen.get_mut(core) {
            *s = true;
        }
        merged.merge(&report);
        self.drain()
    }

    /// `core` will report no more; returns the intervals now complete.
    pub fn stop(&mut self, core: usize) -> Vec<Interval> {
        if let Some(s) = self.stopped.get_mut(core) {
            *s = true;
        }
        self.drain()
    }

    /// Every interval still pending (at the very end, whoever has not reported).
    pub fn flush(&mut self) -> Vec<Interval> {
        self.stopped.iter_mut().for_each(|s| *s = true);
        self.drain()
    }

    /// The merge of every interval emitted so far (from the end of the warm-up).
    pub fn total(&self) -> &Interval {
        &self.total
    }

    fn drain(&mut self) -> Vec<Interval> {
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let complete = entry
                .get()
                .0
                .iter()
                .zip(&self.stopped)
                .all(|(seen, stopped)| *seen || *stopped);
            if !complete {
                break;
            }
            let (_, interval) = entry.remove();
            self.next = interval.index + 1;
            self.total.merge(&interval);
            ready.push(interval);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(index: u64, requests: u64, value: u64) -> Interval {
        let mut i = Interval {
            index,
            start: Duration::from_secs(index),
            end: Duration::from_secs(index + 1),
            ..Interval::default()
        };
        i.sample.requests = requests;
        i.sample.corrected.record(value).unwrap();
        i.bytes.sent = requests * 10;
        i
    }

    #[test]
    fn waits_for_every_core_then_merges_in_order() {
        let mut a = Aggregator::new(2);
        assert!(a.add(0, report(0, 5, 100)).is_empty());
        assert!(a.add(0, report(1, 7, 200)).is_empty());
        let ready = a.add(1, report(0, 3, 300));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].sample.requests, 8);
        assert_eq!(ready[0].sample.corrected.len(), 2);
        assert_eq!(ready[0].bytes.sent, 80);
        assert_eq!(ready[0].rate(), 8.0);
        // Core 1 stops before interval 1: interval 1 completes without it.
        let ready = a.stop(1);
        assert_eq!(ready.iter().map(|i| i.index).collect::<Vec<_>>(), [1]);
        assert_eq!(a.total().sample.requests, 15);
        assert_eq!(a.total().length(), Duration::from_secs(2));
    }

    #[test]
    fn flush_emits_what_is_left_and_late_reports_still_count() {
        let mut a = Aggregator::new(3);
        a.add(0, report(0, 1, 1));
        a.add(1, report(0, 1, 1));
        let ready = a.flush();
        assert_eq!(ready.len(), 1);
        assert!(a.add(2, report(0, 4, 1)).is_empty());
        assert_eq!(a.total().sample.requests, 6);
        assert_eq!(Interval::default().rate(), 0.0);
    }
}
