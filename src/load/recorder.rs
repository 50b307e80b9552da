//! What one core counts: latencies (corrected and uncorrected), responses, and errors by
//! kind. Plain single-threaded state; the runner hands each interval's sample to the main
//! thread and starts a fresh one.

use std::time::Instant;

use serde::Serialize;

use super::response::Response;
use super::schedule::Sent;
use crate::proto::hdr::{Latency, new_histogram};

/// The kinds of failure counted next to the latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The target refused a connection.
    ConnectRefused,
    /// A connection attempt timed out.
    ConnectTimeout,
    /// A connection attempt failed otherwise (unreachable, no route, out of descriptors...).
    ConnectFailed,
    /// The peer reset an open connection.
    Reset,
    /// A request had no response within the timeout (its connection is then reopened).
    Timeout,
    /// The peer closed the connection while a response was outstanding.
    ShortRead,
    /// A response with a non-2xx status (its latency is still recorded).
    BadStatus,
    /// Bytes that are not a valid response, or a response nobody asked for.
    Protocol,
    /// Any other I/O error on an open connection.
    Io,
    /// A TLS handshake failed (certificate refused, no common version or ALPN protocol...).
    TlsHandshake,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 10] = [
        Self::ConnectRefused,
        Self::ConnectTimeout,
        Self::ConnectFailed,
        Self::Reset,
        Self::Timeout,
        Self::ShortRead,
        Self::BadStatus,
        Self::Protocol,
        Self::Io,
        Self::TlsHandshake,
    ];

    /// Words for the summary (`connect refused`).
    pub fn label(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect refused",
            Self::ConnectTimeout => "connect timeout",
            Self::ConnectFailed => "connect failed",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::ShortRead => "short read",
            Self::BadStatus => "bad status",
            Self::Protocol => "protocol",
            Self::Io => "io",
            Self::TlsHandshake => "tls handshake",
        }
    }

    /// The JSON key (`connect_refused`).
    pub fn key(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectFailed => "connect_failed",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::ShortRead => "short_read",
            Self::BadStatus => "bad_status",
            Self::Protocol => "protocol",
            Self::Io => "io",
            Self::TlsHandshake => "tls_handshake",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// A count per [`ErrorKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ErrorKind::ALL.len()]);

impl ErrorCounts {
    /// Counts one error.
    pub fn add(&mut self, kind: ErrorKind) {
        self.0[kind.index()] += 1;
    }

    /// The count of `kind`.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// `(kind, count)` for the kinds that occurred.
    pub fn nonzero(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .into_iter()
            .map(|k| (k, self.get(k)))
            .filter(|(_, n)| *n > 0)
    }
}

impl Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(ErrorKind::ALL.len() + 1))?;
        for k in ErrorKind::ALL {
            map.serialize_entry(k.key(), &self.get(k))?;
        }
        map.serialize_entry("total", &self.total())?;
        map.end()
    }
}

/// Responses with a status other than 2xx, by status code (the `bad status` errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts(Vec<(u16, u64)>);

impl StatusCounts {
    /// Counts one response with `status`.
    pub fn add(&mut self, status: u16) {
        self.add_n(status, 1);
    }

    fn add_n(&mut self, status: u16, n: u64) {
        match self.0.binary_search_by_key(&status, |(s, _)| *s) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (status, n)),
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Self) {
        for &(status, n) in &other.0 {
            self.add_n(status, n);
        }
    }

    /// `(status, count)`, by status code.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0.iter().copied()
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (status, n) in &self.0 {
            map.serialize_entry(&status.to_string(), n)?;
        }
        map.end()
    }
}

/// What was measured over some time: latencies in ns, responses, errors.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Latency from each request's intended send time.
    pub corrected: Latency,
    /// Latency from each request's actual send time.
    pub uncorrected: Latency,
    /// Responses received.
    pub requests: u64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// The `bad status` errors by status code.
    pub bad_statuses: StatusCounts,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            requests: 0,
            errors: ErrorCounts::default(),
            bad_statuses: StatusCounts::default(),
        }
    }
}

impl Sample {
    /// Adds `other` into this sample.
    pub fn merge(&mut self, other: &Self) {
        // Both come from `new_histogram`, so the bounds match and adding cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        self.requests += other.requests;
        self.errors.merge(&other.errors);
        self.bad_statuses.merge(&other.bad_statuses);
    }
}

/// One core's counters for the current interval.
#[derive(Debug, Default)]
pub struct Recorder {
    sample: Sample,
    /// False during the warm-up: nothing is counted.
    active: bool,
}

impl Recorder {
    /// Starts or stops counting (the warm-up does not count).
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// A response to `sent` completed at `done`, with its HTTP status line if it has one: a
    /// status other than 2xx also counts as a `bad status` error.
    pub fn response(&mut self, sent: &Sent, done: Instant, http: Option<Response>) {
        if !self.active {
            return;
        }
        let (corrected, uncorrected) = sent.latencies(done);
        self.sample.corrected.saturating_record(corrected.max(1));
        self.sample.uncorrected.saturating_record(uncorrected.max(1));
        self.sample.requests += 1;
        if let Some(r) = http.filter(|r| !r.is_success()) {
            self.sample.errors.add(ErrorKind::BadStatus);
            self.sample.bad_statuses.add(r.status);
        }
    }

    /// Counts an error.
    pub fn error(&mut self, kind: ErrorKind) {
        if self.active {
            self.sample.errors.add(kind);
        }
    }

    /// Hands over what was counted since the last call and starts afresh.
    pub fn take(&mut self) -> Sample {
        std::mem::take(&mut self.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn http(status: u16) -> Response {
        Response { status, close: false }
    }

    #[test]
    fn records_only_when_active_and_counts_bad_status() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.response(&Sent::now(t0), t0 + Duration::from_micros(10), Some(http(200)));
        r.error(ErrorKind::Reset);
        assert_eq!(r.take().requests, 0);
        r.set_active(true);
        let late = Sent {
            intended: t0,
            sent: t0 + Duration::from_millis(5),
        };
        r.response(&late, t0 + Duration::from_millis(6), Some(http(503)));
        r.response(&late, t0 + Duration::from_millis(6), None);
        r.error(ErrorKind::Reset);
        let s = r.take();
        assert_eq!(s.bad_statuses.iter().collect::<Vec<_>>(), [(503, 1)]);
        assert_eq!(s.requests, 2);
        assert!(s.corrected.equivalent(s.corrected.max(), 6_000_000));
        assert!(s.uncorrected.equivalent(s.uncorrected.max(), 1_000_000));
        assert_eq!(s.errors.get(ErrorKind::BadStatus), 1);
        assert_eq!(s.errors.total(), 2);
        assert_eq!(r.take().requests, 0, "take starts afresh");
    }

    #[test]
    fn counts_merge_and_serialize() {
        let mut a = ErrorCounts::default();
        a.add(ErrorKind::Timeout);
        let mut b = ErrorCounts::default();
        b.add(ErrorKind::Timeout);
        b.add(ErrorKind::ConnectRefused);
        a.merge(&b);
        assert_eq!(a.get(ErrorKind::Timeout), 2);
        assert_eq!(a.nonzero().count(), 2);
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(json["timeout"], 2);
        assert_eq!(json["connect_refused"], 1);
        assert_eq!(json["total"], 3);
        let mut s = Sample::default();
        let mut other = Sample::default();
        other.corrected.record(5).unwrap();
        other.requests = 1;
        other.bad_statuses.add(503);
        other.bad_statuses.add(404);
        s.bad_statuses.add(503);
        s.merge(&other);
        assert_eq!((s.requests, s.corrected.len()), (1, 1));
        assert_eq!(s.bad_statuses.iter().collect::<Vec<_>>(), [(404, 1), (503, 2)]);
        assert_eq!(serde_json::to_value(&s.bad_statuses).unwrap()["503"], 2);
    }
}
