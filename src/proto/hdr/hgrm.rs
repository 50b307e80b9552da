//! The HdrHistogram percentile-distribution text (`.hgrm`), in exactly the layout of Java's
//! `outputPercentileDistribution`, which HdrHistogram's plotter (`plotFiles.html`) reads: it
//! keeps the rows with exactly four space-separated fields and plots column 1 against
//! column 4.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.031 0.000000000000          1           1.00
//!        ...
//!        5.767 1.000000000000      10000
//! #[Mean    =        0.118, StdDeviation   =        0.241]
//! #[Max     =        5.767, Total count    =        10000]
//! #[Buckets =           32, SubBuckets     =         2048]
//! ```

use std::io::{self, Write};

use super::Latency;

/// Percentile rows per halving of the distance to 100% (Java's default).
pub const TICKS_PER_HALF: u32 = 5;

/// Nanoseconds per millisecond: the scale that prints a nanosecond histogram in ms, as
/// HdrHistogram's log processor and wrk2 do.
pub const NS_PER_MS: f64 = 1e6;

/// Writes `h`'s percentile distribution with values divided by `scale` (use [`NS_PER_MS`]
/// for milliseconds) and [`TICKS_PER_HALF`] rows per halving.
///
/// # Errors
///
/// Only `out`'s own write errors.
pub fn write(h: &Latency, scale: f64, out: &mut impl Write) -> io::Result<()> {
    let digits = usize::from(h.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                // The last row (100%) has no fourth column, as in Java.
                writeln!(out, "{value:12.digits$} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let max = h.max() as f64 / scale;
    writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    )
}

/// Sub-buckets per bucket at `sigfig` digits: the smallest power of two at or above
/// 2·10^sigfig (2048 for 3 digits), as HdrHistogram sizes them.
fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hdr::new_histogram;

    fn render(h: &Latency) -> String {
        let mut out = Vec::new();
        write(h, NS_PER_MS, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn java_layout() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let text = render(&h);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let first = lines.next().unwrap();
        assert_eq!(first, "       0.001 0.000000000000          1           1.00");
        let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).skip(2).collect();
        // Every row but the last has exactly 4 fields (what the plotter keeps); the last has 3.
        let (last, body) = rows.split_last().unwrap();
        assert!(body.iter().all(|r| r.split_whitespace().count() == 4), "{text}");
        let last: Vec<&str> = last.split_whitespace().collect();
        let max_ms = format!("{:.3}", h.highest_equivalent(10_000_000) as f64 / 1e6);
        assert_eq!(last, [max_ms.as_str(), "1.000000000000", "10000"]);
        // Counts rise to the total; percentiles rise to 1.
        let counts: Vec<u64> = rows
            .iter()
            .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        let footer: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[0].starts_with("#[Mean    =        5.00"), "{}", footer[0]);
        assert_eq!(
            footer[1],
            format!("#[Max     = {max_ms:>12}, Total count    =        10000]")
        );
        assert_eq!(
            footer[2],
            "#[Buckets =           32, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let text = render(&new_histogram());
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn sub_bucket_counts() {
        assert_eq!(sub_buckets(1), 32);
        assert_eq!(sub_buckets(2), 256);
        assert_eq!(sub_buckets(3), 2048);
    }
}
