//! What one core counts: latencies (corrected and uncorrected), responses, and errors by
//! kind, with the HTTP statuses and RESP error replies that failed requests got. Plain single-threaded state; the runner hands each interval's sample to the main
//! thread and starts a fresh one.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

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
    /// A RESP error reply (`-ERR ...`; its latency is still recorded).
    ErrorReply,
    /// Bytes that are not a valid response, or a response nobody asked for.
    Protocol,
    /// Any other I/O error on an open connection.
    Io,
    /// A TLS handshake failed (certificate refused, no common version or ALPN protocol...).
    TlsHandshake,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 11] = [
        Self::ConnectRefused,
        Self::ConnectTimeout,
        Self::ConnectFailed,
        Self::Reset,
        Self::Timeout,
        Self::ShortRead,
        Self::BadStatus,
        Self::ErrorReply,
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
            Self::ErrorReply => "error reply",
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
            Self::ErrorReply => "error_reply",
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

/// What a complete response says, beside its latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A success: a 2xx status, a RESP reply that is not an error, or a raw response.
    Success,
    /// An HTTP status other than 2xx.
    BadStatus(u16),
    /// A RESP error reply, named by its first word (`ERR`, `WRONGTYPE`, `OOM`).
    ErrorReply(String),
}

/// Counts by key, in key order: the `bad status` errors by status code ([`StatusCounts`]),
/// the error replies by their first word ([`ReplyCounts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally<K>(Vec<(K, u64)>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Responses with a status other than 2xx, by status code (the `bad status` errors).
pub type StatusCounts = Tally<u16>;

/// RESP error replies by their first word (the `error reply` errors).
pub type ReplyCounts = Tally<String>;

/// Distinct error words counted one by one; others count as `other`, so that a server
/// inventing a word per reply cannot grow the counts without bound.
const MAX_REPLY_WORDS: usize = 16;

/// The longest error word kept (a longer one is cut).
const MAX_WORD_LEN: usize = 32;

impl<K: Ord + Clone> Tally<K> {
    /// Counts one of `key`.
    pub fn add(&mut self, key: K) {
        self.add_n(&key, 1);
    }

    fn add_n(&mut self, key: &K, n: u64) {
        match self.0.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (key.clone(), n)),
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Self) {
        for (key, n) in &other.0 {
            self.add_n(key, *n);
        }
    }

    /// `(key, count)`, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, u64)> + '_ {
        self.0.iter().map(|(k, n)| (k, *n))
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ReplyCounts {
    /// Counts an error reply by its word, or as `other` past the distinct words kept.
    fn add_word(&mut self, word: &str) {
        let mut end = word.len().min(MAX_WORD_LEN);
        while !word.is_char_boundary(end) {
            end -= 1;
        }
        let word = &word[..end];
        let known = self.0.iter().any(|(k, _)| k == word);
        if known || self.0.len() < MAX_REPLY_WORDS {
            self.add(word.to_owned());
        } else {
            self.add("other".to_owned());
        }
    }
}

impl<K: fmt::Display> Serialize for Tally<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, n) in &self.0 {
            map.serialize_entry(&key.to_string(), n)?;
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
    /// Requests written and not answered when the run ended: their waits so far are in the
    /// latencies, as lower bounds, and they are not in `requests`.
    pub unanswered: u64,
    /// Requests the open-loop schedule had due before the end but never sent (the
    /// connection's window was full, or it was down): in the latencies likewise, from their
    /// intended time.
    pub unsent: u64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// The `bad status` errors by status code.
    pub bad_statuses: StatusCounts,
    /// The `error reply` errors by the reply's first word.
    pub error_replies: ReplyCounts,
    /// Why the first failed TLS handshake failed (the `tls handshake` errors), if one did.
    pub first_tls_failure: Option<String>,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            requests: 0,
            unanswered: 0,
            unsent: 0,
            errors: ErrorCounts::default(),
            bad_statuses: StatusCounts::default(),
            error_replies: ReplyCounts::default(),
            first_tls_failure: None,
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
        self.unanswered += other.unanswered;
        self.unsent += other.unsent;
        self.errors.merge(&other.errors);
        self.bad_statuses.merge(&other.bad_statuses);
        self.error_replies.merge(&other.error_replies);
        if self.first_tls_failure.is_none() {
            self.first_tls_failure.clone_from(&other.first_tls_failure);
        }
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

    /// A response to `sent` completed at `done`: a bad status or an error reply also counts
    /// as an error.
    pub fn response(&mut self, sent: &Sent, done: Instant, verdict: Verdict) {
        if !self.active {
            return;
        }
        let (corrected, uncorrected) = sent.latencies(done);
        self.sample.corrected.saturating_record(corrected.max(1));
        self.sample.uncorrected.saturating_record(uncorrected.max(1));
        self.sample.requests += 1;
        match verdict {
            Verdict::Success => {}
            Verdict::BadStatus(status) => {
                self.sample.errors.add(ErrorKind::BadStatus);
                self.sample.bad_statuses.add(status);
            }
            Verdict::ErrorReply(word) => {
                self.sample.errors.add(ErrorKind::ErrorReply);
                self.sample.error_replies.add_word(&word);
            }
        }
    }

    /// A request with no answer when the run ended, still unanswered at `at`: its wait so
    /// far is recorded as its latency (corrected from its intended time; uncorrected from
    /// its write, if it was written), a lower bound, so that a server stalled at the end is
    /// charged for the stall; and it counts as unanswered, or as unsent if it never went out.
    pub fn unanswered(&mut self, intended: Instant, sent: Option<Instant>, at: Instant) {
        if !self.active {
            return;
        }
        match sent {
            Some(sent) => {
                self.timed_out(&Sent { intended, sent }, at);
                self.sample.unanswered += 1;
            }
            None => {
                let (corrected, _) = Sent::now(intended).latencies(at);
                self.sample.corrected.saturating_record(corrected.max(1));
                self.sample.unsent += 1;
            }
        }
    }

    /// A request given up at `at` with no answer (its connection timed out, or the run
    /// ended): its wait so far is recorded as its latency, a lower bound, so that a stall is
    /// charged to the tail rather than left out. It is not a response: `requests` does not
    /// count it.
    pub fn timed_out(&mut self, sent: &Sent, at: Instant) {
        if !self.active {
            return;
        }
        let (corrected, uncorrected) = sent.latencies(at);
        self.sample.corrected.saturating_record(corrected.max(1));
        self.sample.uncorrected.saturating_record(uncorrected.max(1));
    }

    /// Counts an error.
    pub fn error(&mut self, kind: ErrorKind) {
        if self.active {
            self.sample.errors.add(kind);
        }
    }

    /// Counts a failed TLS handshake; the first one's `reason` is kept for the summary.
    pub fn tls_failure(&mut self, reason: &str) {
        if self.active {
            self.sample.errors.add(ErrorKind::TlsHandshake);
            if self.sample.first_tls_failure.is_none() {
                self.sample.first_tls_failure = Some(reason.to_owned());
            }
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

    #[test]
    fn records_only_when_active_and_counts_bad_status() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.response(&Sent::now(t0), t0 + Duration::from_micros(10), Verdict::Success);
        r.error(ErrorKind::Reset);
        assert_eq!(r.take().requests, 0);
        r.set_active(true);
        let late = Sent {
            intended: t0,
            sent: t0 + Duration::from_millis(5),
        };
        r.response(&late, t0 + Duration::from_millis(6), Verdict::BadStatus(503));
        r.response(&late, t0 + Duration::from_millis(6), Verdict::Success);
        r.response(
            &late,
            t0 + Duration::from_millis(6),
            Verdict::ErrorReply("OOM".into()),
        );
        r.error(ErrorKind::Reset);
        let s = r.take();
        assert_eq!(s.bad_statuses.iter().collect::<Vec<_>>(), [(&503, 1)]);
        assert_eq!(
            s.error_replies.iter().collect::<Vec<_>>(),
            [(&"OOM".to_owned(), 1)]
        );
        assert_eq!(s.requests, 3);
        assert!(s.corrected.equivalent(s.corrected.max(), 6_000_000));
        assert!(s.uncorrected.equivalent(s.uncorrected.max(), 1_000_000));
        assert_eq!(s.errors.get(ErrorKind::BadStatus), 1);
        assert_eq!(s.errors.get(ErrorKind::ErrorReply), 1);
        assert_eq!(s.errors.total(), 3);
        assert_eq!(r.take().requests, 0, "take starts afresh");
    }

    #[test]
    fn unanswered_and_timed_out_requests_count_at_their_wait_so_far() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.set_active(true);
        let at = t0 + Duration::from_secs(2);
        r.unanswered(t0, Some(t0 + Duration::from_secs(1)), at);
        r.unanswered(t0 + Duration::from_millis(500), None, at);
        let s = r.take();
        assert_eq!((s.requests, s.unanswered, s.unsent), (0, 1, 1));
        assert_eq!(s.corrected.len(), 2);
        assert!(s.corrected.equivalent(s.corrected.max(), 2_000_000_000));
        assert!(s.corrected.equivalent(s.corrected.min(), 1_500_000_000));
        assert_eq!(
            s.uncorrected.len(),
            1,
            "a request never written has no uncorrected latency"
        );
        assert!(s.uncorrected.equivalent(s.uncorrected.max(), 1_000_000_000));
        r.timed_out(&Sent::now(t0), at);
        let s = r.take();
        assert_eq!((s.requests, s.unanswered, s.corrected.len()), (0, 0, 1));
        assert!(s.corrected.equivalent(s.corrected.max(), 2_000_000_000));
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
        assert_eq!(s.bad_statuses.iter().collect::<Vec<_>>(), [(&404, 1), (&503, 2)]);
        assert_eq!(serde_json::to_value(&s.bad_statuses).unwrap()["503"], 2);
    }

    #[test]
    fn error_words_are_bounded_in_length_and_number() {
        let mut c = ReplyCounts::default();
        c.add_word(&"É".repeat(40));
        for i in 0..40 {
            c.add_word(&format!("E{i}"));
        }
        c.add_word("E0");
        let words: Vec<_> = c.iter().collect();
        assert_eq!(words.len(), MAX_REPLY_WORDS + 1, "{words:?}");
        assert!(
            words.contains(&(&"É".repeat(16), 1)),
            "cut at a char boundary: {words:?}"
        );
        assert!(words.contains(&(&"E0".to_owned(), 2)));
        assert!(words.contains(&(&"other".to_owned(), 25)));
    }
}
