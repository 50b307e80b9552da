//! The `Date` header's value: an IMF-fixdate, formatted at most once a second.

use crate::proto::civil::civil_from_days;

/// A `Date` value kept for the second it was formatted in: an encoder formats it again only
/// when the second it is given changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    /// The date at `secs` (Unix seconds), formatted again only when the second changed.
    pub(crate) fn at(&mut self, secs: u64) -> &str {
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text = http_date(secs);
        }
        &self.text
    }
}

/// Formats Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month = MONTHS.get((month - 1) as usize).copied().unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn the_cache_formats_once_per_second() {
        let mut c = DateCache::default();
        assert_eq!(c.at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(c.at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(c.at(1), "Thu, 01 Jan 1970 00:00:01 GMT");
    }
}
