//! At most one log line a second for events that can come by the thousand (failed TLS
//! handshakes, connections reset for their output): operators see that they happen and the
//! last one's details, without a flood. I/O-free.

use std::time::{Duration, Instant};

/// How often a digest lets a line through.
const INTERVAL: Duration = Duration::from_secs(1);

/// Counts events between the lines it lets through.
#[derive(Debug, Default)]
pub(crate) struct Digest {
    /// When the last line was let through.
    logged: Option<Instant>,
    /// Events since then.
    count: u64,
}

/// The events a due line sums up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// How many (at least one).
    pub(crate) count: u64,
    /// The time since the last line; `None` for the first one.
    pub(crate) since: Option<Duration>,
}

impl Digest {
    /// Records an event at `now`; returns what to log if a line is due: the first event,
    /// then the first one a second or more after the last line.
    pub(crate) fn record(&mut self, now: Instant) -> Option<Summary> {
        self.count += 1;
        let since = match self.logged {
            Some(at) if now.duration_since(at) < INTERVAL => return None,
            Some(at) => Some(now.duration_since(at)),
            None => None,
        };
        self.logged = Some(now);
        Some(Summary {
            count: std::mem::take(&mut self.count),
            since,
        })
    }
}

impl Summary {
    /// `"1 <noun>"` or `"N <noun>s"`.
    pub(crate) fn counted(&self, noun: &str) -> String {
        let plural = if self.count == 1 { "" } else { "s" };
        format!("{} {noun}{plural}", self.count)
    }

    /// `""` for the first line, else `" in the last 1.5s"`.
    pub(crate) fn window(&self) -> String {
        self.since
            .map(|d| format!(" in the last {:.1}s", d.as_secs_f64()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_summed_up_once_a_second() {
        let mut d = Digest::default();
        let t0 = Instant::now();
        let first = d.record(t0);
        assert_eq!(
            first,
            Some(Summary {
                count: 1,
                since: None
            })
        );
        for ms in [1, 500, 999] {
            assert_eq!(d.record(t0 + Duration::from_millis(ms)), None);
        }
        let later = d.record(t0 + Duration::from_millis(1500));
        assert_eq!(
            later.map(|s| format!("{}{}", s.counted("reset"), s.window())),
            Some("4 resets in the last 1.5s".to_string())
        );
        assert_eq!(
            first.map(|s| s.counted("handshake") + &s.window()),
            Some("1 handshake".to_string())
        );
    }
}
