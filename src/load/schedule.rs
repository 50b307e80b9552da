//! Request timing: when each request was meant to go out and when it went, and the
//! open-loop schedule (wrk2's model against coordinated omission).
//!
//! Latency is measured twice. *Corrected*: from the request's intended send time, so a
//! server that stalls is charged for every request the schedule wanted to send during the
//! stall, not only the few already on the wire. *Uncorrected*: from the moment the request
//! was actually written. In a closed loop the two are the same.

use std::time::{Duration, Instant};

/// One request on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// When the schedule wanted it sent.
    pub intended: Instant,
    /// When it was written.
    pub sent: Instant,
}

impl Sent {
    /// A request sent when it was meant to be (closed loop).
    pub fn now(at: Instant) -> Self {
        Self {
            intended: at,
            sent: at,
        }
    }

    /// `(corrected, uncorrected)` latency in ns of a response that completed at `done`.
    pub fn latencies(&self, done: Instant) -> (u64, u64) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        (
            ns(done.saturating_duration_since(self.intended)),
            ns(done.saturating_duration_since(self.sent)),
        )
    }
}

/// The open-loop plan of one connection: request `k` is due at `origin + k / rate`.
///
/// Requests that fall behind (the server is slow, or the connection's window of in-flight
/// requests is full) stay due and go out as soon as they can, with their intended time
/// unchanged: the backlog drains at once, and every delay shows in the corrected latency.
#[derive(Debug, Clone)]
pub struct Schedule {
    origin: Instant,
    /// Seconds between requests.
    interval: f64,
    next: u64,
}

impl Schedule {
    /// `rate` requests per second from `origin` (a positive, finite rate).
    pub fn new(origin: Instant, rate: f64) -> Self {
        Self {
            origin,
            interval: 1.0 / rate,
            next: 0,
        }
    }

    /// The intended time of the next request.
    pub fn due(&self) -> Instant {
        self.at(self.next)
    }

    /// The intended time of request `k`.
    fn at(&self, k: u64) -> Instant {
        self.origin + Duration::from_secs_f64(k as f64 * self.interval)
    }

    /// Takes every request due before `end` at once (those never sent when a run ends),
    /// in work that does not grow with their number.
    pub fn take_until(&mut self, end: Instant) -> Backlog {
        let first = self.due();
        let span = end.saturating_duration_since(self.origin).as_secs_f64();
        // The first request not due before `end`: estimated, then set exact by the same
        // rounding as `due` (a step or two at most).
        let mut last = ((span / self.interval).ceil() as u64).max(self.next);
        while last > self.next && self.at(last - 1) >= end {
            last -= 1;
        }
        while self.at(last) < end {
            last += 1;
        }
        let count = last - self.next;
        self.next = last;
        Backlog {
            first,
            interval: self.interval,
            count,
        }
    }

    /// Takes the next request's slot; returns its intended time.
    pub fn take(&mut self) -> Instant {
        let at = self.due();
        self.next += 1;
        at
    }
}

/// Requests an open-loop schedule had due that never went out: `count` of them, the first
/// due at `first` and each next one `interval` seconds later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// When the first was due.
    pub first: Instant,
    /// Seconds between two of them.
    pub interval: f64,
    /// How many.
    pub count: u64,
}

impl Backlog {
    /// The part of the backlog due at `from` or later.
    pub fn since(&self, from: Instant) -> Self {
        let ahead = from.saturating_duration_since(self.first).as_secs_f64();
        let mut skip = ((ahead / self.interval).ceil() as u64).min(self.count);
        // Set exact by the rounding of `due_at` (a step at most).
        while skip > 0 && self.due_at(skip - 1) >= from {
            skip -= 1;
        }
        while skip < self.count && self.due_at(skip) < from {
            skip += 1;
        }
        Self {
            first: self.due_at(skip),
            interval: self.interval,
            count: self.count - skip,
        }
    }

    /// When request `i` of the backlog was due.
    fn due_at(&self, i: u64) -> Instant {
        self.first + Duration::from_secs_f64(i as f64 * self.interval)
    }

    /// Their waits at `at` in ns: `(shortest, step)`, the waits being `shortest + i * step`
    /// for `i` below `count` (the last due has waited least). `None` for an empty backlog.
    pub fn waits(&self, at: Instant) -> Option<(u64, f64)> {
        let newest = self.due_at(self.count.checked_sub(1)?);
        let (shortest, _) = Sent::now(newest).latencies(at);
        Some((shortest, self.interval * 1e9))
    }
}

/// How a connection paces its requests.
#[derive(Debug, Clone)]
pub enum Pacing {
    /// Send a request whenever the window has room: as fast as the server answers.
    Closed,
    /// Send on schedule (and catch up when late).
    Open(Schedule),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spacing() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0);
        assert_eq!(s.take(), t0);
        assert_eq!(s.take(), t0 + Duration::from_millis(1));
        assert_eq!(s.due(), t0 + Duration::from_millis(2));
        for _ in 0..998 {
            s.take();
        }
        // No drift over many requests.
        assert_eq!(s.due(), t0 + Duration::from_secs(1));
    }

    #[test]
    fn a_backlog_is_taken_whole_and_exactly() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(t0, 1000.0);
        s.take();
        // Due at 1, 2, 3 ms; not the one due at the end itself.
        let b = s.take_until(t0 + ms(4));
        assert_eq!((b.first, b.count), (t0 + ms(1), 3));
        assert_eq!(s.due(), t0 + ms(4));
        assert_eq!(s.take_until(t0 + ms(4)).count, 0, "nothing twice");
        assert_eq!(b.waits(t0 + ms(10)), Some((7_000_000, 1e6)));
        let later = b.since(t0 + ms(2));
        assert_eq!((later.first, later.count), (t0 + ms(2), 2));
        assert_eq!(b.since(t0 + ms(9)).count, 0);
        assert_eq!(b.since(t0).count, 3);
        // A billion a second for an hour: counted, not walked.
        let mut fast = Schedule::new(t0, 1e9);
        assert_eq!(
            fast.take_until(t0 + Duration::from_secs(3600)).count,
            3_600_000_000_000
        );
    }

    #[test]
    fn corrected_latency_counts_from_intended_time() {
        let t0 = Instant::now();
        let sent = Sent {
            intended: t0,
            sent: t0 + Duration::from_millis(900),
        };
        let (c, u) = sent.latencies(t0 + Duration::from_millis(1000));
        assert_eq!(c, 1_000_000_000);
        assert_eq!(u, 100_000_000);
        assert_eq!(
            Sent::now(t0).latencies(t0 + Duration::from_micros(5)),
            (5_000, 5_000)
        );
        // A clock that reads earlier than the send gives 0, not a wrap.
        assert_eq!(Sent::now(t0 + Duration::from_secs(1)).latencies(t0), (0, 0));
    }
}
