//! Files given to `weft hist` that are not interval logs but are often mistaken for one: what
//! each is, and what to give instead.

/// What `bytes` (a file that did not read as an interval log) look like, and what to do, if
/// they are a known other format: gzip, a percentile distribution (`.hgrm`), wrk/wrk2's
/// output, JSON.
pub fn hint(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Some("it is gzip-compressed: gunzip it first");
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]);
    let first = head.lines().next().unwrap_or_default();
    if first.split_whitespace().take(2).eq(["Value", "Percentile"]) {
        return Some(
            "this is a percentile distribution, a .hgrm file, which has no intervals: give weft \
             hist the --hdr-log file of the run",
        );
    }
    if first.starts_with("Running ") || head.contains("Latency Distribution") || head.contains("Thread Stats")
    {
        return Some(
            "this looks like wrk/wrk2 output: weft hist reads HdrHistogram interval logs, and wrk2 \
             writes none (its percentiles are the text itself)",
        );
    }
    if matches!(head.trim_start().as_bytes().first(), Some(b'{' | b'[')) {
        return Some(
            "this is JSON (weft load --json writes percentiles, not histograms): give weft hist \
             the --hdr-log file of the run",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_formats_are_named() {
        assert!(hint(&[0x1f, 0x8b, 8, 0]).unwrap().contains("gunzip"));
        let hgrm = b"       Value     Percentile TotalCount 1/(1-Percentile)\n\n       0.010 0.0 1 1.00\n";
        assert!(hint(hgrm).unwrap().contains(".hgrm"));
        let wrk = b"Running 2s test @ http://127.0.0.1:16002/\n  1 threads and 8 connections\n";
        assert!(hint(wrk).unwrap().contains("wrk2"));
        assert!(
            hint(b"  Latency Distribution\n     50%   38.00us\n")
                .unwrap()
                .contains("wrk")
        );
        assert!(hint(b"\n  {\"config\": {}}").unwrap().contains("JSON"));
        assert_eq!(hint(b"#[StartTime: 1.0]\n"), None);
        assert_eq!(hint(b"garbage"), None);
        assert_eq!(hint(b""), None);
    }
}
