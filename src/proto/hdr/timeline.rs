//! Latency over time from interval logs, in bounded memory: intervals are decoded one at a
//! time in time order, and each row of the over-time table keeps one histogram while it
//! fills, then only its summary. A day of one-second intervals takes a few MB, not one
//! decoded histogram (265 KB at weft's bounds) per interval.

use super::log::{Decoder, Interval, Log, LogError};
use super::{Latency, Summary, merge, new_merge_target};

/// Tolerance of a row boundary, in rows: a start a rounding error short of one counts in it.
const EDGE: f64 = 1e-6;

/// Decodes every interval with `tag` of `logs` in time order (file order among equal starts)
/// and hands each to `each` with the index of its log: one decoded histogram is alive at a
/// time.
///
/// # Errors
///
/// The first error of `each` or of decoding, with the index of the log it is in.
pub fn read_in_time_order<'a>(
    logs: &[&'a Log<'a>],
    tag: Option<&str>,
    mut each: impl FnMut(usize, &Interval<'a>, &Latency) -> Result<(), LogError>,
) -> Result<(), (usize, LogError)> {
    let mut order: Vec<(usize, &Interval<'a>)> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, log)| log.tagged(tag).map(move |iv| (i, iv)))
        .collect();
    order.sort_by(|a, b| a.1.start.total_cmp(&b.1.start));
    let mut decoder = Decoder::new();
    for (i, iv) in order {
        let h = decoder.decode(iv).map_err(|e| (i, e))?;
        each(i, iv, &h).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// The width of the over-time rows: the intervals' typical (median) length, so that a short
/// last interval (an interrupted run, a duration that is not a whole number of intervals)
/// neither narrows every row nor mislabels their times; 1 s without intervals.
pub fn typical_width(lengths: impl Iterator<Item = f64>) -> f64 {
    let mut lengths: Vec<f64> = lengths.filter(|l| *l > 0.0).collect();
    lengths.sort_by(f64::total_cmp);
    lengths.get(lengths.len() / 2).copied().unwrap_or(1.0)
}

/// One row of the over-time table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// When the row starts, in seconds from the time zero.
    pub time: f64,
    /// Its values (count 0: the row's intervals hold none).
    pub summary: Summary,
}

/// Rows of fixed width, filled by intervals given in time order: the open row holds one
/// histogram, a finished one its [`Summary`].
#[derive(Debug)]
pub struct Timeline {
    /// Start of row 0, in the intervals' clock.
    anchor: f64,
    /// Row width, in seconds.
    width: f64,
    /// Row 0's time, in seconds from the time zero.
    first: f64,
    /// The row being filled: its index and histogram.
    open: Option<(i64, Latency)>,
    rows: Vec<Row>,
}

impl Timeline {
    /// Rows `width` seconds wide, the first starting at `anchor` (the first interval's
    /// start) and labelled `anchor - origin` (its time from the time zero).
    pub fn new(anchor: f64, width: f64, origin: f64) -> Self {
        Self {
            anchor,
            width: if width > 0.0 { width } else { 1.0 },
            first: anchor - origin,
            open: None,
            rows: Vec::new(),
        }
    }

    /// Adds the interval starting at `start` with histogram `h`. Intervals come in time
    /// order: one that starts in an earlier row than the open one is counted in the open one.
    /// Returns false if values were lost (they do not fit a histogram).
    pub fn add(&mut self, start: f64, h: &Latency) -> bool {
        let row = ((start - self.anchor) / self.width + EDGE).floor() as i64;
        if self.open.as_ref().is_some_and(|(open, _)| row > *open) {
            self.close();
        }
        let (_, target) = self.open.get_or_insert_with(|| (row, new_merge_target()));
        merge(target, h)
    }

    /// Histograms it holds now: at most one.
    pub fn histograms(&self) -> usize {
        usize::from(self.open.is_some())
    }

    /// Summarises the open row and lets its histogram go.
    fn close(&mut self) {
        if let Some((row, h)) = self.open.take() {
            self.rows.push(Row {
                time: self.first + row as f64 * self.width,
                summary: Summary::of(&h),
            });
        }
    }

    /// The rows, in time order.
    pub fn finish(mut self) -> Vec<Row> {
        self.close();
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use hdrhistogram::serialization::V2DeflateSerializer;

    use super::*;
    use crate::proto::hdr::log::{begin, write_interval};
    use crate::proto::hdr::new_histogram;

    /// A log of `n` one-second intervals, the k-th holding `k % 7 + 1` values (none every
    /// 10th), starting `offset` seconds after its StartTime.
    fn long_log(n: u64, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut log = begin(&mut out, &mut ser, start, "long").unwrap();
        for k in 0..n {
            let mut h = new_histogram();
            if k % 10 != 9 {
                h.record_n(1_000 + k, k % 7 + 1).unwrap();
            }
            let at = Duration::from_secs(k + offset);
            write_interval(&mut log, &h, at, Duration::from_secs(1), None).unwrap();
        }
        drop(log);
        out
    }

    #[test]
    fn rows_are_as_wide_as_the_typical_interval_not_a_short_last_one() {
        assert_eq!(typical_width([1.0, 1.0, 0.401].into_iter()), 1.0);
        assert_eq!(typical_width([1.0, 0.401].into_iter()), 1.0);
        assert_eq!(typical_width([0.5, 0.5, 0.5, 0.2].into_iter()), 0.5);
        assert_eq!(typical_width([0.0].into_iter()), 1.0);
        assert_eq!(typical_width(std::iter::empty()), 1.0);
    }

    /// An hour of one-second intervals is read holding one decoded interval and one row at a
    /// time, whatever the log's length: a total and a timeline of minute-wide rows.
    #[test]
    fn a_long_log_is_read_with_a_bounded_number_of_live_histograms() {
        let bytes = long_log(3_600, 0);
        let log = Log::read(&bytes).unwrap();
        let logs = [&log];
        let origin = logs[0].origin(None).unwrap();
        let mut total = new_merge_target();
        let mut minutes = Timeline::new(origin, 60.0, origin);
        let mut most = 0;
        let mut seen = 0;
        read_in_time_order(&logs, None, |_, iv, h| {
            seen += 1;
            assert!(merge(&mut total, h) && minutes.add(iv.start, h));
            // The decoded interval, the total, the open row.
            most = most.max(1 + 1 + minutes.histograms());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 3_600);
        assert_eq!(most, 3);
        let rows = minutes.finish();
        assert_eq!(rows.len(), 60);
        assert_eq!(rows[1].time, 60.0);
        assert_eq!(rows.iter().map(|r| r.summary.count).sum::<u64>(), total.len());
        assert_eq!(
            total.len(),
            (0..3_600u64)
                .filter(|k| k % 10 != 9)
                .map(|k| k % 7 + 1)
                .sum::<u64>()
        );
    }

    #[test]
    fn rows_count_from_the_time_zero_and_empty_ones_have_no_values() {
        // A server's log whose first interval ends 3 s after its StartTime.
        let bytes = long_log(12, 2);
        let log = Log::read(&bytes).unwrap();
        let logs = [&log];
        let origin = logs[0].origin(None).unwrap();
        let first = logs[0].intervals[0].start;
        let mut t = Timeline::new(first, 1.0, origin);
        read_in_time_order(&logs, None, |_, iv, h| {
            assert!(t.add(iv.start, h));
            Ok(())
        })
        .unwrap();
        let rows = t.finish();
        assert_eq!(rows[0].time, 2.0);
        assert_eq!(rows[9].summary.count, 0);
        assert_eq!(rows[8].summary.count, 8 % 7 + 1);
    }

    #[test]
    fn several_logs_are_read_in_time_order() {
        let (a, b) = (long_log(3, 0), long_log(3, 1));
        let (a, b) = (Log::read(&a).unwrap(), Log::read(&b).unwrap());
        let logs = [&a, &b];
        let mut order = Vec::new();
        read_in_time_order(&logs, None, |i, iv, _| {
            order.push((i, iv.start - 1_800_000_000.0));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            order,
            [(0, 0.0), (0, 1.0), (1, 1.0), (0, 2.0), (1, 2.0), (1, 3.0)]
        );
    }
}
