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
use hdrhistogram::serialization::interval_log::{IntervalLogWriter, IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{DeserializeError, Deserializer, V2DeflateSerializer};

use super::{Latency, merge, new_merge_target};

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
    #[error("not an HdrHistogram interval log: line {line} does not read: {reason}")]
    Parse {
        /// The line's number, from 1.
        line: usize,
        /// Why it does not read.
        reason: String,
    },
    /// An interval's histogram payload does not decode.
    #[error("the histogram of the interval on line {line} does not decode: {detail}")]
    Payload {
        /// The interval's line, from 1.
        line: usize,
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

/// One interval of a log, parsed but not decoded: [`Decoder::decode`] gives its histogram,
/// so that a reader holds one decoded histogram at a time however long the log.
#[derive(Debug, Clone)]
pub struct Interval<'a> {
    /// Its tag; `None` for untagged (corrected) intervals.
    pub tag: Option<&'a str>,
    /// Start, in seconds: since the epoch when the log says when it started, else as
    /// written.
    pub start: f64,
    /// Length, in seconds.
    pub length: f64,
    /// Its line in the file, from 1.
    pub line: usize,
    /// The base64 histogram.
    payload: &'a str,
}

/// An interval line left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Its line in the file, from 1.
    pub line: usize,
    /// Why it was left out.
    pub reason: String,
}

/// A log read back: its headers, and its intervals in file order (not decoded).
#[derive(Debug, Clone, Default)]
pub struct Log<'a> {
    /// The first `StartTime` header, in seconds since the epoch.
    pub start_time: Option<f64>,
    /// The first `BaseTime` header, in seconds since the epoch.
    pub base_time: Option<f64>,
    /// The `MaxValueDivisor` header: what the writer divided its max column by.
    pub max_value_divisor: Option<f64>,
    /// Every interval, whatever its tag.
    pub intervals: Vec<Interval<'a>>,
    /// Interval lines left out (a negative time, which Python's `hdrh` writer produces).
    pub skipped: Vec<Skipped>,
    /// The last line was cut short (the writer was killed mid-line) and is left out.
    pub truncated: bool,
}

/// The headers seen so far while reading, by which later timestamps are read.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    start: Option<f64>,
    base: Option<f64>,
}

impl<'a> Log<'a> {
    /// Parses a whole log (the histograms are decoded later, one at a time, by a
    /// [`Decoder`]). A last line without its newline that does not read is taken for one cut
    /// short by a writer that died, and left out ([`truncated`](Self::truncated)): the
    /// intervals before it still count (a file of that one line is an error). An interval with a negative time is left out and
    /// listed in [`skipped`](Self::skipped).
    ///
    /// # Errors
    ///
    /// [`LogError::Parse`] for a line that is not part of the format (with its number and
    /// why).
    pub fn read(bytes: &'a [u8]) -> Result<Self, LogError> {
        let mut log = Self::default();
        let mut clock = Clock::default();
        let mut decoder = Decoder::new();
        for (index, raw) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
            let number = index + 1;
            let terminated = raw.ends_with(b"\n");
            let read = log.read_line(raw, number, &mut clock);
            // A last line without its newline must also decode to count as whole.
            let read = match read {
                Ok(()) if !terminated => match log.intervals.last() {
                    Some(iv) if iv.line == number => decoder.decode(iv).map(drop),
                    _ => Ok(()),
                },
                read => read,
            };
            match read {
                Ok(()) => {}
                // Cut short only after a whole line: a one-line file is read as it is.
                Err(_) if !terminated && index > 0 => {
                    log.intervals.retain(|iv| iv.line != number);
                    log.truncated = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(log)
    }

    /// Reads line `number`: a header, a comment, the column legend or an interval.
    fn read_line(&mut self, raw: &'a [u8], number: usize, clock: &mut Clock) -> Result<(), LogError> {
        let unreadable = |reason: String| LogError::Parse { line: number, reason };
        let text = std::str::from_utf8(raw)
            .map_err(|_| unreadable("it is not text (UTF-8)".into()))?
            .trim_end_matches(['\n', '\r']);
        if let Some(rest) = text.strip_prefix("#[StartTime: ") {
            if let Some(t) = leading_number(rest) {
                clock.start = Some(t);
                self.start_time.get_or_insert(t);
            }
        } else if let Some(rest) = text.strip_prefix("#[BaseTime: ") {
            if let Some(t) = leading_number(rest) {
                clock.base = Some(t);
                self.base_time.get_or_insert(t);
            }
        } else if let Some(rest) = text.strip_prefix("#[MaxValueDivisor: ") {
            self.max_value_divisor = self.max_value_divisor.or(leading_number(rest));
        } else if text.is_empty() || text.starts_with('#') || text.starts_with("\"StartTimestamp\"") {
            // A comment, the column legend, or a blank line.
        } else {
            match parse_interval(text, number).map_err(unreadable)? {
                Ok(mut iv) => {
                    iv.start = absolute(iv.start, clock.base, clock.start);
                    self.intervals.push(iv);
                }
                Err(reason) => self.skipped.push(Skipped { line: number, reason }),
            }
        }
        Ok(())
    }

    /// The intervals with `tag` (`None`: the untagged ones).
    pub fn tagged<'s>(&'s self, tag: Option<&'s str>) -> impl Iterator<Item = &'s Interval<'a>> + 's {
        self.intervals.iter().filter(move |i| i.tag == tag)
    }

    /// The log's time zero for `tag`'s intervals: its StartTime (else BaseTime) when it has
    /// one, but never after its first such interval (the first interval's start without
    /// either; `None` without intervals).
    pub fn origin(&self, tag: Option<&str>) -> Option<f64> {
        let first = self.tagged(tag).map(|iv| iv.start).reduce(f64::min)?;
        Some(self.start_time.or(self.base_time).map_or(first, |t| t.min(first)))
    }

    /// The intervals with `tag` added together, decoded one at a time.
    ///
    /// # Errors
    ///
    /// [`LogError::Payload`] for a histogram that does not decode.
    pub fn merged(&self, tag: Option<&str>) -> Result<Latency, LogError> {
        let mut total = new_merge_target();
        let mut decoder = Decoder::new();
        for iv in self.tagged(tag) {
            let h = decoder.decode(iv)?;
            if !merge(&mut total, &h) {
                return Err(LogError::Payload {
                    line: iv.line,
                    detail: "its values do not fit a histogram".into(),
                });
            }
        }
        Ok(total)
    }
}

/// The number at the start of `text` (`1767225600.000 (seconds since epoch)`,
/// `1000000.000]`).
fn leading_number(text: &str) -> Option<f64> {
    let end = text.find([' ', ']', ',']).unwrap_or(text.len());
    text[..end].parse().ok().filter(|v: &f64| v.is_finite())
}

/// Parses an interval line, `[Tag=T,]start,length,max,histogram`: the interval; or `Ok(Err)`
/// with the reason to skip it (a negative time); or `Err` with why it does not read.
fn parse_interval(text: &str, line: usize) -> Result<Result<Interval<'_>, String>, String> {
    const FORM: &str = "an interval line is [Tag=T,]start,length,max,histogram";
    let (tag, rest) = match text.strip_prefix("Tag=") {
        Some(tagged) => match tagged.split_once(',') {
            Some((tag, rest)) => (Some(tag), rest),
            None => return Err(format!("a tag without the fields after it ({FORM})")),
        },
        None => (None, text),
    };
    let fields: Vec<&str> = rest.splitn(4, ',').collect();
    let [start, length, max, payload] = fields[..] else {
        return Err(format!(
            "{} comma-separated field{} where an interval has 4 ({FORM})",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        ));
    };
    let number = |name: &str, v: &str| -> Result<f64, String> {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("its {name} {v:?} is not a number ({FORM})"))
    };
    let (start, length) = (number("start", start)?, number("length", length)?);
    number("max", max)?;
    if payload.trim().is_empty() {
        return Err(format!("it has no histogram ({FORM})"));
    }
    for (name, v) in [("start time", start), ("length", length)] {
        if v < 0.0 {
            return Ok(Err(format!(
                "its {name} {v} is negative (Python hdrh's log writer writes such times)"
            )));
        }
    }
    Ok(Ok(Interval {
        tag,
        start,
        length,
        line,
        payload: payload.trim(),
    }))
}

/// Decodes intervals' histograms, reusing its buffers from one to the next.
#[derive(Default)]
pub struct Decoder {
    deserializer: Deserializer,
    raw: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// `iv`'s histogram, at the bounds and precision its writer chose.
    ///
    /// # Errors
    ///
    /// [`LogError::Payload`] for a histogram that does not decode.
    pub fn decode(&mut self, iv: &Interval<'_>) -> Result<Latency, LogError> {
        let bad = |detail: String| LogError::Payload {
            line: iv.line,
            detail,
        };
        self.raw.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(iv.payload, &mut self.raw)
            .map_err(|e| bad(e.to_string()))?;
        self.deserializer
            .deserialize(&mut self.raw.as_slice())
            .map_err(|e| bad(payload_fault(&e)))
    }
}

/// What is wrong with a histogram payload, in words (the crate's own are Rust's debug text).
fn payload_fault(e: &DeserializeError) -> String {
    match e {
        DeserializeError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "its data ends early (the line was cut short or altered)".into()
        }
        DeserializeError::IoError(e) => format!("its compressed data is damaged ({e})"),
        DeserializeError::InvalidCookie => {
            "it is not an HdrHistogram (its first bytes are not a histogram's)".into()
        }
        DeserializeError::InvalidParameters => {
            "its bounds are impossible (lowest or highest value, significant digits)".into()
        }
        DeserializeError::EncodedArrayTooLong => "it holds more counts than its bounds allow".into(),
        DeserializeError::UnsuitableCounterType => "a count is too large to hold".into(),
        e => format!("it cannot be read: {e}"),
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

    #[test]
    fn a_payload_that_does_not_decode_is_told_in_words() {
        let cut = DeserializeError::IoError(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "incomplete deflate stream",
        ));
        assert_eq!(
            payload_fault(&cut),
            "its data ends early (the line was cut short or altered)"
        );
        let text = payload_fault(&DeserializeError::InvalidCookie);
        assert!(!text.contains("InvalidCookie"), "{text}");
    }

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
        assert_eq!(Decoder::new().decode(&log.intervals[0]).unwrap(), a);
        assert_eq!(log.intervals[1].tag, Some(UNCORRECTED_TAG));
        assert_eq!(log.intervals[2].start, 1_767_225_602.0);
        assert_eq!(log.intervals[2].length, 1.0);
        let mut both = a.clone();
        both.add(&b).unwrap();
        assert_eq!(log.merged(None).unwrap(), both);
        assert_eq!(log.merged(Some(UNCORRECTED_TAG)).unwrap(), b);
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
            let bytes = write_log(&entries);
            let log = Log::read(&bytes).unwrap();
            merged.add(log.merged(None).unwrap()).unwrap();
            for h in run {
                together.add(h).unwrap();
            }
        }
        assert_eq!(merged, together);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let e = Log::read(b"#c\ngarbage line\n").unwrap_err();
        assert!(matches!(e, LogError::Parse { line: 2, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("line 2 does not read: 1 comma-separated field "),
            "{e}"
        );
        for bad in [
            &b"0.000,1.000,1.0,HISTFAAAAnotbase64!!\n"[..],
            b"0.000,1.000,1.0,AAAA\n",
        ] {
            let log = Log::read(bad).unwrap();
            let e = log.merged(None).unwrap_err();
            assert!(matches!(e, LogError::Payload { line: 1, .. }), "{e}");
        }
        assert!(Log::read(b"#only a comment\n").unwrap().intervals.is_empty());
        assert!(Log::read(b"").unwrap().intervals.is_empty());
        // One line, cut or not, is not a log cut short.
        assert!(matches!(
            Log::read(b"garbage"),
            Err(LogError::Parse { line: 1, .. })
        ));
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
        assert_eq!(log.merged(None).unwrap(), a);
        // A bad line that is not the last one is still an error.
        let mut bad = b"garbage line\n".to_vec();
        bad.extend_from_slice(&whole);
        assert!(matches!(
            Log::read(&bad[..bad.len() - 10]),
            Err(LogError::Parse { .. })
        ));
    }

    #[test]
    fn every_unreadable_line_says_where_and_why() {
        let why = |text: &[u8]| Log::read(text).unwrap_err().to_string();
        assert!(why(b"#x\n#y\nTag=a\n").contains("line 3 does not read: a tag without"));
        assert!(why(b"x,1.0,2.0,HIST\n").contains("line 1 does not read: its start \"x\" is not a number"));
        assert!(why(b"1.0,,2.0,HIST\n").contains("its length \"\" is not a number"));
        assert!(why(b"1.0,1.0,2.0,\n").contains("it has no histogram"));
        assert!(why(b"\x1f\x8b\x08\n").contains("line 1 does not read: it is not text"));
    }

    #[test]
    fn negative_times_are_skipped_with_their_line_and_reason() {
        let a = hist([10, 20]);
        let good = String::from_utf8(write_log(&[(&a, None), (&a, None)])).unwrap();
        // Python hdrh's writer: its start minus the BaseTime once too often.
        let payload = good
            .lines()
            .last()
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .to_owned();
        let text = format!("{good}-5.000,1.000,1.0,{payload}\nTag=x,1.0,-1.0,1.0,{payload}\n");
        let log = Log::read(text.as_bytes()).unwrap();
        assert_eq!(log.intervals.len(), 2);
        let lines = good.lines().count();
        assert_eq!(log.skipped.len(), 2);
        assert_eq!(log.skipped[0].line, lines + 1);
        assert!(
            log.skipped[0].reason.contains("start time -5 is negative"),
            "{:?}",
            log.skipped
        );
        assert!(log.skipped[1].reason.contains("length -1 is negative"));
    }

    #[test]
    fn headers_are_kept_and_the_origin_is_the_start_time() {
        let a = hist([10]);
        let log_bytes = write_log(&[(&a, None), (&a, Some(UNCORRECTED_TAG))]);
        let mut text = String::from_utf8(log_bytes).unwrap();
        let log = Log::read(text.as_bytes()).unwrap();
        assert_eq!(log.max_value_divisor, Some(1e6));
        assert_eq!(log.base_time, Some(1_767_225_600.0));
        // The uncorrected interval starts a second in; its time zero is still the StartTime.
        assert_eq!(log.origin(Some(UNCORRECTED_TAG)), Some(1_767_225_600.0));
        assert_eq!(log.origin(Some("none")), None);
        // Without headers: the first interval.
        text = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let log = Log::read(text.as_bytes()).unwrap();
        assert_eq!(log.origin(Some(UNCORRECTED_TAG)), Some(1.0));
    }

    #[test]
    fn timestamp_rules() {
        assert_eq!(absolute(2.0, Some(100.0), Some(100.0)), 102.0);
        assert_eq!(absolute(2.0, None, Some(1e9)), 1e9 + 2.0);
        assert_eq!(absolute(1e9 + 2.0, None, Some(1e9)), 1e9 + 2.0);
        assert_eq!(absolute(2.0, None, None), 2.0);
    }
}
