//! The process's own figures, as Prometheus client libraries export them (`process_*`),
//! read from `/proc/self` when a scrape asks.

use crate::sys::process::{clock_ticks_per_second, page_size};

/// What `/proc` says about this process now; a figure it could not read is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcessStats {
    /// Resident memory, in bytes.
    pub(crate) resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub(crate) virtual_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub(crate) cpu_seconds: Option<f64>,
    /// User CPU time alone, and system CPU time alone, in seconds (kv's `INFO cpu`).
    pub(crate) cpu_user_system: Option<(f64, f64)>,
    /// Open file descriptors.
    pub(crate) open_fds: Option<u64>,
    /// The soft limit of open file descriptors (`None` as well when unlimited).
    pub(crate) max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's figures.
    pub(crate) fn read() -> Self {
        let read = |path| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| Stat::parse(&s));
        let ticks = clock_ticks_per_second().map(|t| t as f64);
        let boot = read("/proc/stat").and_then(|s| boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        Self {
            resident_bytes: stat.and_then(|s| Some(s.rss_pages * page_size()?)),
            virtual_bytes: stat.map(|s| s.vsize),
            cpu_seconds: stat.zip(ticks).map(|(s, t)| (s.utime + s.stime) as f64 / t),
            cpu_user_system: stat
                .zip(ticks)
                .map(|(s, t)| (s.utime as f64 / t, s.stime as f64 / t)),
            open_fds,
            max_fds: read("/proc/self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: stat
                .zip(ticks)
                .zip(boot)
                .map(|((s, t), boot)| boot as f64 + s.start_ticks as f64 / t),
        }
    }
}

/// The fields of `/proc/self/stat` that matter here (see proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User time, in clock ticks.
    utime: u64,
    /// System time, in clock ticks.
    stime: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
    /// Resident set size, in pages.
    rss_pages: u64,
}

impl Stat {
    /// Parses the line of `/proc/<pid>/stat`; its second field (the command, in parentheses)
    /// may hold spaces and parentheses: the fields after it start after the last `)`.
    fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.rsplit_once(')')?;
        // The fields after the command, from field 3 (state): field n is at index n - 3.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

/// The boot time in seconds since the Unix epoch: `btime` of `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` if unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let line = "4242 (we ird) cmd)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 \
                    3 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 130,
                start_ticks: 98765,
                vsize: 123_456_789,
                rss_pages: 2048,
            })
        );
        assert_eq!(Stat::parse("4242 (short) S 1"), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files  unlimited  unlimited  files\n"),
            None
        );
    }

    #[test]
    fn reads_this_process() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let p = ProcessStats::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20), "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let started = p.start_time_seconds.unwrap_or(0.0);
        assert!(started > now - 86_400.0 && started <= now + 1.0, "{p:?}");
    }
}
