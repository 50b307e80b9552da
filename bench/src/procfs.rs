//! Another process's memory, from `/proc/PID/status`.

use std::io;

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rss {
    /// `VmRSS`: every resident page (anonymous, file-backed and shared).
    pub total: u64,
    /// `RssAnon`: resident anonymous pages (heap, stacks): what connections allocate.
    pub anon: u64,
}

/// Reads the resident memory of process `pid`.
///
/// # Errors
///
/// The process does not exist or its status is unreadable.
pub fn rss(pid: u32) -> io::Result<Rss> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS in /proc/{pid}/status"),
        )
    })
}

/// Extracts `VmRSS` and `RssAnon` (in kB in the file) from a status text, in bytes.
fn parse_status(text: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_fields_in_bytes() {
        let text = "Name:\tweft\nVmRSS:\t    5120 kB\nRssAnon:\t    2048 kB\nRssFile:\t 3072 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Rss {
                total: 5120 * 1024,
                anon: 2048 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_status() {
        let me = rss(std::process::id()).unwrap();
        assert!(me.total > 0 && me.anon <= me.total);
    }
}
