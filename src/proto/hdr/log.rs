//! HdrHistogram interval logs (`.hlog`, format version 1.3): one compressed histogram per
//! interval and tag, which HdrHistogram's own tools (HistogramLogProcessor,
//! HistogramLogAnalyzer, the Python `hdrh` reader) read.
//!
//! ```text
//! #weft load 127.0.0.1:8080 (http)
//! #[Histogram log format version 1.3]
//! #[StartTime: 1767225600.000 (seconds since epoch)]
//! #[BaseTime: 1767225600.000 (seconds since epoch)]
//! #[MaxValueDivisor: 1000000.000]
//! 0.000,1.000,1.234,HISTFAAAA...
//! Tag=uncorrected,0.000,1.000,0.876,HISTFAAAA...
//! ```
//!
//! Interval start times are relative to the `BaseTime`; the max column is in ms (values are
//! ns). Payloads are V2 + DEFLATE (`HISTF...`), the only form Java's readers accept.

use std::io::Write;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use super::{Latency, new_merge_target};

/// The tag of the uncorrected histograms in a `weft load` log. Untagged intervals hold the
/// latency corrected for coordinated omission (measured from each request's intended send
/// time), the default view of every HdrHistogram tool.
pub const UNCORRECTED_TAG: &str = "uncorrected";

/// The version comment HdrHistogram's writers put first (the Rust crate does not).
const VERSION_COMMENT: &str = "[Histogram log format version 1.3]";

/// Divides the max column: ns values, printed in ms as Java's writer does.
const MAX_VALUE_DIVISOR: f64 = 1e6;

/// Timestamps more than a year before the StartTime are taken as relative to it (the rule of
/// HdrHistogram's readers for logs without a BaseTime).
const RELATIVE_THRESHOLD_S: f64 = 365.0 * 24.0 * 3600.0;

/// Why a log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Writing the log failed.
    #[error("cannot write the histogram log: {0}")]
    Write(String),
    /// A line is neither a comment, a header nor an interval.
    #[error("not an HdrHistogram interval log (unreadable line at byte {offset})")]
    Parse {
        /// Byte offset of the line.
        offset: usize,
    },
    /// An interval's histogram payload does not decode.
    #[error("interval {index} of the log has a bad histogram payload: {detail}")]
    Payload {
        /// The interval's position in the log, from 0.
        index: usize,
        /// What was wrong.
        detail: String,
    },
}

/// A log writer over the caller's output and serializer (see [`begin`]).
pub type Writer<'a, W> = IntervalLogWriter<'a, 'a, W, V2DeflateSerializer>;

/// Starts a log on `out`: `comment`, the version, the start and base time (`start`), and
/// the max-value divisor. Intervals are then written with [`write_interval`].
///
/// # Errors
///
/// `out`'s write errors.
pub fn begin<'a, W: Write>(
    out: &'a mut W,
    serializer: &'a mut V2DeflateSerializer,
    start: SystemTime,
    comment: &str,
) -> Result<Writer<'a, W>, LogError> {
    let mut builder = IntervalLogWriterBuilder::new();
    // A comment line cannot hold a line break: each line becomes its own comment.
    builder
        .add_comment(comment)
        .add_comment(VERSION_COMMENT)
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(MAX_VALUE_DIVISOR);
    builder
        .begin_log_with(out, serializer)
        .map_err(|e| LogError::Write(e.to_string()))
}

/// Writes one interval: `h` recorded from `start` (after the log's base time) for
/// `length`, under `tag` (none for the default, corrected view).
///
/// # Errors
///
/// A write error, or a tag with a comma, space or line break.
pub fn write_interval<W: Write>(
    log: &mut Writer<'_, W>,
    h: &Latency,
    start: Duration,
    length: Duration,
    tag: Option<&str>,
) -> Result<(), LogError> {
    let tag = match tag {
        Some(t) => Some(Tag::new(t).ok_or_else(|| LogError::Write(format!("invalid tag {t:?}")))?),
        None => None,
    };
    log.write_histogram(h, start, length, tag)
        .map_err(|e| LogError::Write(e.to_string()))
}

/// One interval read back from a log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Its tag; `None` for untagged (corrected) intervals.
    pub tag: Option<String>,
    /// Start, in seconds: since the epoch when the log says when it started, else as
    /// written.
    pub start: f64,
    /// Length, in seconds.
    pub length: f64,
    /// The decoded histogram.
    pub histogram: Latency,
}

/// A log read back: its start time (seconds since the epoch) if it has one, and its
/// intervals in file order.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The `StartTime` header.
    pub start_time: Option<f64>,
    /// Every interval, whatever its tag.
    pub intervals: Vec<Interval>,
    /// The last line was cut short (the writer was killed mid-line) and is left out.
    pub truncated: bool,
}

impl Log {
    /// Parses and decodes a whole log. A last line without its newline that does not parse is
    /// taken for one cut short by a writer that died, and left out ([`truncated`](Self::truncated)):
    /// the intervals before it still count.
    ///
    /// # Errors
    ///
    /// [`LogError::Parse`] for a line that is not part of the format, [`LogError::Payload`]
    /// for a histogram that does not decode.
    pub fn read(bytes: &[u8]) -> Result<Self, LogError> {
        match Self::read_all(bytes) {
            Err(e) if !bytes.ends_with(b"\n") => {
                let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let mut log = Self::read_all(&bytes[..complete]).map_err(|_| e)?;
                log.truncated = true;
                Ok(log)
            }
            read => read,
        }
    }

    /// Parses and decodes every line of `bytes`.
    fn read_all(bytes: &[u8]) -> Result<Self, LogError> {
        let mut log = Self::default();
        let mut base_time: Option<f64> = None;
        let mut deserializer = Deserializer::new();
        let mut raw = Vec::new();
        for entry in IntervalLogIterator::new(bytes) {
            let entry = entry.map_err(|e| match e {
                hdrhistogram::serialization::interval_log::LogIteratorError::ParseError { offset } => {
                    LogError::Parse { offset }
                }
            })?;
            match entry {
                LogEntry::StartTime(t) => log.start_time = Some(t.as_secs_f64()),
                LogEntry::BaseTime(t) => base_time = Some(t.as_secs_f64()),
                LogEntry::Interval(i) => {
                    let index = log.intervals.len();
                    let bad = |detail: String| LogError::Payload { index, detail };
                    raw.clear();
                    base64::engine::general_purpose::STANDARD
                        .decode_vec(i.encoded_histogram(), &mut raw)
                        .map_err(|e| bad(e.to_string()))?;
                    let decoded: Latency = deserializer
                        .deserialize(&mut raw.as_slice())
                        .map_err(|e| bad(format!("{e:?}")))?;
                    let mut histogram = new_merge_target();
                    if histogram.add(&decoded).is_err() {
                        return Err(bad("values out of range".into()));
                    }
                    let written = i.start_timestamp().as_secs_f64();
                    log.intervals.push(Interval {
                        tag: i.tag().map(|t| t.as_str().to_owned()),
                        start: absolute(written, base_time, log.start_time),
                        length: i.duration().as_secs_f64(),
                        histogram,
                    });
                }
            }
        }
        Ok(log)
    }

    /// The intervals with `tag` (`None`: the untagged ones).
    pub fn tagged<'a>(&'a self, tag: Option<&'a str>) -> impl Iterator<Item = &'a Interval> + 'a {
        self.intervals.iter().filter(move |i| i.tag.as_deref() == tag)
    }

    /// The intervals with `tag` added together.
    pub fn merged(&self, tag: Option<&str>) -> Latency {
        let mut total = new_merge_target();
        for i in self.tagged(tag) {
            // A merge target grows to fit, so adding cannot fail.
            let _ = total.add(&i.histogram);
        }
        total
    }
}

/// An interval's start in seconds since the epoch, by HdrHistogram's reader rules: relative
/// to the BaseTime when there is one; else relative to the StartTime when it is more than a
/// year before it; else absolute (or, with no header at all, as written).
fn absolute(written: f64, base: Option<f64>, start: Option<f64>) -> f64 {
    match (base, start) {
        (Some(b), _) => written + b,
        (None, Some(s)) if written < s - RELATIVE_THRESHOLD_S => written + s,
        _ => written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hdr::new_histogram;

    fn hist(values: impl IntoIterator<Item = u64>) -> Latency {
        let mut h = new_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    fn write_log(intervals: &[(&Latency, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut log = begin(&mut out, &mut ser, start, "weft test").unwrap();
        for (k, (h, tag)) in intervals.iter().enumerate() {
            let at = Duration::from_secs(k as u64);
            write_interval(&mut log, h, at, Duration::from_secs(1), *tag).unwrap();
        }
        drop(log);
        out
    }

    #[test]
    fn header_and_payload_form() {
        let a = hist([1_000, 2_000_000]);
        let text = String::from_utf8(write_log(&[(&a, None), (&a, Some(UNCORRECTED_TAG))])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#weft test");
        assert_eq!(lines[1], "#[Histogram log format version 1.3]");
        assert_eq!(lines[2], "#[StartTime: 1767225600.000 (seconds since epoch)]");
        assert_eq!(lines[3], "#[BaseTime: 1767225600.000 (seconds since epoch)]");
        assert!(lines[5].starts_with("0.000,1.000,2.00"), "{}", lines[5]);
        assert!(lines[5].contains(",HISTF"), "compressed V2 payload: {}", lines[5]);
        assert!(lines[6].starts_with("Tag=uncorrected,1.000,1.000,"));
    }

    #[test]
    fn round_trip_with_tags_and_times() {
        let a = hist([10, 20, 30_000]);
        let b = hist([5_000_000, 7]);
        let bytes = write_log(&[(&a, None), (&b, Some(UNCORRECTED_TAG)), (&b, None)]);
        let log = Log::read(&bytes).unwrap();
        assert_eq!(log.start_time, Some(1_767_225_600.0));
        assert_eq!(log.intervals.len(), 3);
        assert_eq!(log.intervals[0].histogram, a);
        assert_eq!(log.intervals[1].tag.as_deref(), Some(UNCORRECTED_TAG));
        assert_eq!(log.intervals[2].start, 1_767_225_602.0);
        assert_eq!(log.intervals[2].length, 1.0);
        let mut both = a.clone();
        both.add(&b).unwrap();
        assert_eq!(log.merged(None), both);
        assert_eq!(log.merged(Some(UNCORRECTED_TAG)), b);
        assert_eq!(log.tagged(Some("nope")).count(), 0);
    }

    #[test]
    fn merging_two_logs_equals_both_runs_together() {
        let runs: Vec<Vec<Latency>> = (0..2u64)
            .map(|r| {
                (0..3u64)
                    .map(|k| hist((1..500).map(|v| v * (k + 1) * (r + 3) * 997)))
                    .collect()
            })
            .collect();
        let mut together = new_merge_target();
        let mut merged = new_merge_target();
        for run in &runs {
            let entries: Vec<(&Latency, Option<&str>)> = run.iter().map(|h| (h, None)).collect();
            let log = Log::read(&write_log(&entries)).unwrap();
            merged.add(log.merged(None)).unwrap();
            for h in run {
                together.add(h).unwrap();
            }
        }
        assert_eq!(merged, together);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            Log::read(b"garbage line\n"),
            Err(LogError::Parse { .. })
        ));
        assert!(matches!(
            Log::read(b"0.000,1.000,1.0,HISTFAAAAnotbase64!!\n"),
            Err(LogError::Payload { .. })
        ));
        assert!(matches!(
            Log::read(b"0.000,1.000,1.0,AAAA\n"),
            Err(LogError::Payload { .. })
        ));
        assert!(Log::read(b"#only a comment\n").unwrap().intervals.is_empty());
        assert!(Log::read(b"").unwrap().intervals.is_empty());
    }

    #[test]
    fn a_last_line_cut_short_is_left_out_and_said() {
        let a = hist([10, 20]);
        let whole = write_log(&[(&a, None), (&a, None)]);
        let complete = Log::read(&whole).unwrap();
        assert!(!complete.truncated);
        // Killed while writing the second interval: its line ends mid-payload.
        let cut = &whole[..whole.len() - 10];
        let log = Log::read(cut).unwrap();
        assert!(log.truncated);
        assert_eq!(log.intervals.len(), 1);
        assert_eq!(log.intervals[0].histogram, a);
        // A bad line that is not the last one is still an error.
        let mut bad = b"garbage line\n".to_vec();
        bad.extend_from_slice(&whole);
        assert!(matches!(
            Log::read(&bad[..bad.len() - 10]),
            Err(LogError::Parse { .. })
        ));
    }

    #[test]
    fn timestamp_rules() {
        assert_eq!(absolute(2.0, Some(100.0), Some(100.0)), 102.0);
        assert_eq!(absolute(2.0, None, Some(1e9)), 1e9 + 2.0);
        assert_eq!(absolute(1e9 + 2.0, None, Some(1e9)), 1e9 + 2.0);
        assert_eq!(absolute(2.0, None, None), 2.0);
    }
}
