//! What one core counts: latencies (corrected and uncorrected), responses, and errors by
//! kind, with the HTTP statuses and RESP error replies that failed requests got. Plain single-threaded state; the runner hands each interval's sample to the main
//! thread and starts a fresh one.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::schedule::{Backlog, Sent};
use crate::proto::hdr::{Latency, new_histogram};

/// Records the values `shortest + i * step` for every `i` below `count` into `h`, a bucket
/// at a time: at most as many steps as its buckets between the shortest and the longest (a
/// few thousand), however many values, and buckets between two values are skipped.
fn record_progression(h: &mut Latency, shortest: u64, step: f64, count: u64) {
    // How many of the values are at most `x`.
    let at_most = |x: u64| -> u64 {
        if x < shortest {
            return 0;
        }
        let below = ((x - shortest) as f64 / step).floor();
        if below >= count as f64 {
            count
        } else {
            below as u64 + 1
        }
    };
    let mut recorded = 0;
    let mut v = shortest;
    while recorded < count {
        if v >= h.high() {
            // Past the histogram's range: what is left counts at its top, as
            // `saturating_record` would.
            h.saturating_record_n(h.high(), count - recorded);
            return;
        }
        let top = h.highest_equivalent(v);
        let upto = at_most(top);
        h.saturating_record_n(v, upto - recorded);
        recorded = upto;
        // The next bucket, or (values far apart) the one the next value is in: from a unit
        // below its place, so that rounding cannot skip it.
        let next = shortest.saturating_add((recorded as f64 * step).ceil() as u64);
        v = top.saturating_add(1).max(next.saturating_sub(1));
    }
}

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
    /// Requests due from this time on are measured; `None`: nothing is counted (before
    /// the end of the warm-up, after the end of the run).
    from: Option<Instant>,
}

impl Recorder {
    /// Counts errors, and the requests due at `from` or later (whenever answered), from
    /// now on; `None` counts nothing more. A request due during the warm-up is not
    /// measured even if its answer comes after it (wrk2 and h2load leave the warm-up out
    /// likewise): a backlog from the warm-up does not inflate the measured rate.
    pub fn measure_from(&mut self, from: Option<Instant>) {
        self.from = from;
    }

    /// True when a request due at `intended` is measured.
    fn measures(&self, intended: Instant) -> bool {
        self.from.is_some_and(|from| intended >= from)
    }

    /// A response to `sent` completed at `done`: a bad status or an error reply also counts
    /// as an error.
    pub fn response(&mut self, sent: &Sent, done: Instant, verdict: Verdict) {
        if !self.measures(sent.intended) {
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

    /// A request written and with no answer when the run ended, still unanswered at `at`:
    /// its wait so far is recorded as its latency (a lower bound, so that a server stalled
    /// at the end is charged for the stall), and it counts as unanswered.
    pub fn unanswered(&mut self, sent: &Sent, at: Instant) {
        if self.measures(sent.intended) {
            self.timed_out(sent, at);
            self.sample.unanswered += 1;
        }
    }

    /// Requests due before the end of the run and never sent, still waiting at `at`: each
    /// one's wait from its intended time is recorded as its corrected latency, and they
    /// count as unsent. The work is bounded by the histogram's buckets, not their number.
    pub fn unsent(&mut self, backlog: &Backlog, at: Instant) {
        let Some(from) = self.from else { return };
        let backlog = backlog.since(from);
        if let Some((shortest, step)) = backlog.waits(at) {
            record_progression(&mut self.sample.corrected, shortest.max(1), step, backlog.count);
            self.sample.unsent += backlog.count;
        }
    }

    /// A request given up at `at` with no answer (its connection timed out, or the run
    /// ended): its wait so far is recorded as its latency, a lower bound, so that a stall is
    /// charged to the tail rather than left out. It is not a response: `requests` does not
    /// count it.
    pub fn timed_out(&mut self, sent: &Sent, at: Instant) {
        if !self.measures(sent.intended) {
            return;
        }
        let (corrected, uncorrected) = sent.latencies(at);
        self.sample.corrected.saturating_record(corrected.max(1));
        self.sample.uncorrected.saturating_record(uncorrected.max(1));
    }

    /// Counts an error.
    pub fn error(&mut self, kind: ErrorKind) {
        if self.from.is_some() {
            self.sample.errors.add(kind);
        }
    }

    /// Counts a failed TLS handshake; the first one's `reason` is kept for the summary.
    pub fn tls_failure(&mut self, reason: &str) {
        if self.from.is_some() {
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
        r.measure_from(Some(t0));
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
    fn requests_due_during_the_warm_up_are_not_measured_when_answered_after_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recorder::default();
        r.measure_from(Some(t0 + ms(100)));
        r.response(&Sent::now(t0 + ms(99)), t0 + ms(150), Verdict::Success);
        r.timed_out(&Sent::now(t0 + ms(50)), t0 + ms(150));
        r.unanswered(&Sent::now(t0), t0 + ms(150));
        r.response(&Sent::now(t0 + ms(100)), t0 + ms(150), Verdict::Success);
        // Due at 0, 10 ... 190 ms: the ten from 100 ms on are measured.
        let backlog = Backlog {
            first: t0,
            interval: 0.01,
            count: 20,
        };
        r.unsent(&backlog, t0 + ms(200));
        let s = r.take();
        assert_eq!((s.requests, s.unanswered, s.unsent), (1, 0, 10));
        assert_eq!(s.corrected.len(), 11);
        assert!(s.corrected.equivalent(s.corrected.max(), 100_000_000));
        r.measure_from(None);
        r.error(ErrorKind::Reset);
        r.response(&Sent::now(t0 + ms(200)), t0 + ms(300), Verdict::Success);
        assert_eq!(r.take().errors.total() + r.take().requests, 0, "stopped");
    }

    #[test]
    fn a_huge_backlog_is_recorded_in_bounded_work_with_every_wait() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.measure_from(Some(t0));
        // A billion requests a second for 100 s, none sent, all waiting at 100 s.
        let backlog = Backlog {
            first: t0,
            interval: 1e-9,
            count: 100_000_000_000,
        };
        r.unsent(&backlog, t0 + Duration::from_secs(100));
        let s = r.take();
        assert_eq!(s.unsent, 100_000_000_000);
        assert_eq!(s.corrected.len(), 100_000_000_000);
        // Evenly spread from 1 ns to 100 s: the median near 50 s, the p99 near 1 s.
        let p50 = s.corrected.value_at_quantile(0.5) as f64;
        let p01 = s.corrected.value_at_quantile(0.01) as f64;
        assert!((p50 / 50e9 - 1.0).abs() < 0.01, "{p50}");
        assert!((p01 / 1e9 - 1.0).abs() < 0.01, "{p01}");
        assert!(s.corrected.equivalent(s.corrected.max(), 100_000_000_000));
        assert!(s.uncorrected.is_empty(), "never written: no uncorrected latency");
    }

    #[test]
    fn a_progression_lands_in_the_right_buckets() {
        let mut h = new_histogram();
        record_progression(&mut h, 1_000, 1_000.0, 5);
        assert_eq!(h.len(), 5);
        for v in [1_000, 2_000, 3_000, 4_000, 5_000] {
            assert_eq!(h.count_at(v), 1, "{v}");
        }
        let mut top = new_histogram();
        let high = top.high();
        record_progression(&mut top, high - 10, 5.0, 7);
        assert_eq!(top.len(), 7, "past the range: counted at the top");
    }

    #[test]
    fn unanswered_and_timed_out_requests_count_at_their_wait_so_far() {
        let t0 = Instant::now();
        let mut r = Recorder::default();
        r.measure_from(Some(t0));
        let at = t0 + Duration::from_secs(2);
        let written = Sent {
            intended: t0,
            sent: t0 + Duration::from_secs(1),
        };
        r.unanswered(&written, at);
        let backlog = Backlog {
            first: t0 + Duration::from_millis(500),
            interval: 1.0,
            count: 1,
        };
        r.unsent(&backlog, at);
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
