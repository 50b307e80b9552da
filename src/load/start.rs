//! When a load run begins: a wall-clock time that several `weft load` processes, on one
//! machine or many, agree on (`--start-at`), so that their interval logs cover the same
//! seconds and merge into one picture with `weft hist`.
//!
//! I/O-free: parsing and the delay from a given "now"; the caller reads the clock and sleeps.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::civil::days_from_civil;

/// How far in the past a start time may be and still start at once: processes launched by
/// one script or one Job reach their start a little apart, and clocks differ a little.
pub const START_TOLERANCE: Duration = Duration::from_secs(1);

/// A wall-clock start time: RFC 3339 (`2026-12-02T09:00:00Z`, `2026-12-02T10:00:00.5+01:00`)
/// or Unix seconds (`1796202000`, `1796202000.25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartAt(SystemTime);

/// Why a start time cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The text is neither RFC 3339 nor Unix seconds.
    #[error(
        "invalid start time {0:?}: expected RFC 3339 (2026-12-02T09:00:00Z, with Z or an offset \
         such as +01:00) or Unix seconds (1796202000, e.g. $(date -d '+30 sec' +%s))"
    )]
    Invalid(String),
    /// The time has passed by more than [`START_TOLERANCE`].
    #[error(
        "the start time {at} passed {ago:.1} s ago: give a time in the future (check that this \
         machine's clock is synchronised, e.g. chronyc tracking)"
    )]
    Past {
        /// The start time, as Unix seconds.
        at: UnixTime,
        /// How long ago it was, in seconds.
        ago: f64,
    },
}

/// A time shown as Unix seconds with milliseconds (`1796202000.250`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixTime(pub SystemTime);

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        write!(f, "{}.{:03}", d.as_secs(), d.subsec_millis())
    }
}

impl StartAt {
    /// The start time.
    pub fn time(&self) -> SystemTime {
        self.0
    }

    /// How long to wait from `now`: zero when the time has come or passed by at most
    /// [`START_TOLERANCE`].
    ///
    /// # Errors
    ///
    /// [`StartError::Past`] when it passed longer ago.
    pub fn delay_from(&self, now: SystemTime) -> Result<Duration, StartError> {
        match self.0.duration_since(now) {
            Ok(ahead) => Ok(ahead),
            Err(e) if e.duration() <= START_TOLERANCE => Ok(Duration::ZERO),
            Err(e) => Err(StartError::Past {
                at: UnixTime(self.0),
                ago: e.duration().as_secs_f64(),
            }),
        }
    }
}

impl FromStr for StartAt {
    type Err = StartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || StartError::Invalid(s.to_owned());
        let time = if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let secs: f64 = t.parse().map_err(|_| bad())?;
            // Up to the year 9999, as RFC 3339 allows.
            if !(0.0..253_402_300_800.0).contains(&secs) {
                return Err(bad());
            }
            UNIX_EPOCH + Duration::from_secs_f64(secs)
        } else {
            rfc3339(t).ok_or_else(bad)?
        };
        Ok(Self(time))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t` or a space may stand for `T`, `z` for `Z`.
fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num_of(&rest[1..3])?, num_of(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (:60) is read as the second after :59.
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn num_of(s: &str) -> Option<i64> {
    if s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Duration {
        s.parse::<StartAt>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .time()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    #[test]
    fn parses_rfc3339_and_unix_seconds() {
        assert_eq!(at("1970-01-01T00:00:00Z"), Duration::ZERO);
        // `date -d 2026-12-02T09:00:00Z +%s`
        assert_eq!(at("2026-12-02T09:00:00Z"), Duration::from_secs(1_796_202_000));
        assert_eq!(
            at("2026-12-02T10:00:00+01:00"),
            Duration::from_secs(1_796_202_000)
        );
        assert_eq!(
            at("2026-12-02t08:30:00-00:30"),
            Duration::from_secs(1_796_202_000)
        );
        assert_eq!(
            at("2024-02-29 23:59:59.25z"),
            Duration::new(1_709_251_199, 250_000_000)
        );
        assert_eq!(
            at("2000-03-01T00:00:00.123456789123Z").subsec_nanos(),
            123_456_789
        );
        assert_eq!(at("1796202000"), Duration::from_secs(1_796_202_000));
        assert_eq!(at(" 1796202000.5 "), Duration::from_millis(1_796_202_000_500));
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "now",
            "-5",
            "1.2.3",
            "2026-12-02",
            "2026-12-02T09:00:00",
            "2026-12-02T09:00Z",
            "2026-13-02T09:00:00Z",
            "2026-02-29T09:00:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T09:00:00.Z",
            "2026-12-02T09:00:00+1:00",
            "2026-12-02T09:00:00+01:60",
            "1969-12-31T23:59:59Z",
            "1e12",
        ] {
            let e = bad.parse::<StartAt>().unwrap_err();
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn delay_waits_for_the_future_and_tolerates_a_little_past() {
        let start: StartAt = "1796202000".parse().unwrap();
        let t = start.time();
        assert_eq!(
            start.delay_from(t - Duration::from_secs(5)),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(start.delay_from(t), Ok(Duration::ZERO));
        assert_eq!(start.delay_from(t + START_TOLERANCE), Ok(Duration::ZERO));
        let e = start.delay_from(t + Duration::from_secs(90)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the start time 1796202000.000 passed 90.0 s ago: give a time in the future (check \
             that this machine's clock is synchronised, e.g. chronyc tracking)"
        );
    }
}
