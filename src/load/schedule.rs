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
        self.origin + Duration::from_secs_f64(self.next as f64 * self.interval)
    }

    /// Takes the next request's slot; returns its intended time.
    pub fn take(&mut self) -> Instant {
        let at = self.due();
        self.next += 1;
        at
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
