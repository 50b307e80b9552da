//! PROXY v1: one text line, `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Parsed, ProxiedAddresses, ProxyError, ProxyHeader, ProxyVersion, V1_MAX_LEN};

const PREFIX: &[u8] = b"PROXY ";

/// Parses a buffer that starts with `P`.
pub(super) fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(ProxyError::BadSignature);
    }
    let Some(end) = line_end(buf)? else {
        return Ok(Parsed::Incomplete);
    };
    let line = &buf[PREFIX.len().min(end)..end];
    let addresses = parse_line(line)?;
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version: ProxyVersion::V1,
            addresses,
        },
        len: end + 2,
    })
}

/// The index of the CR of the terminating CRLF, `None` if it may still come.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => return Err(ProxyError::V1BareCrLf),
            b'\r' if i + 2 > V1_MAX_LEN => return Err(ProxyError::V1NoCrlf),
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(ProxyError::V1BareCrLf),
                    None => Ok(None),
                };
            }
            _ => {}
        }
    }
    if buf.len() >= V1_MAX_LEN {
        Err(ProxyError::V1NoCrlf)
    } else {
        Ok(None)
    }
}

/// Parses what follows `PROXY ` on the line, CRLF excluded.
fn parse_line(line: &[u8]) -> Result<Option<ProxiedAddresses>, ProxyError> {
    let bad = ProxyError::V1Malformed;
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // The specification: whatever follows UNKNOWN is ignored, the real addresses stand.
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|_| bad("non-ASCII bytes"))?;
    let mut fields = text.split(' ');
    let mut next = || fields.next().filter(|f| !f.is_empty());
    let family = next().ok_or(bad("missing protocol"))?;
    let (src, dst, sport, dport) = (
        next().ok_or(bad("missing source address"))?,
        next().ok_or(bad("missing destination address"))?,
        next().ok_or(bad("missing source port"))?,
        next().ok_or(bad("missing destination port"))?,
    );
    if next().is_some() || text.ends_with(' ') {
        return Err(bad("extra fields or spaces after the ports"));
    }
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| bad("source is not an IPv4 address"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| bad("destination is not an IPv4 address"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| bad("source is not an IPv6 address"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| bad("destination is not an IPv6 address"))?
                .into(),
        ),
        _ => return Err(bad("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(ProxiedAddresses {
        source: SocketAddr::new(src, port(sport)?).into(),
        destination: SocketAddr::new(dst, port(dport)?).into(),
    }))
}

/// A decimal port, 0 to 65535, without sign or leading zero.
fn port(s: &str) -> Result<u16, ProxyError> {
    let digits = s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::V1Malformed(
            "a port is not a number from 0 to 65535 without leading zeros",
        ));
    }
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("a port is above 65535"))
}

#[cfg(test)]
mod tests {
    use super::super::parse as parse_any;
    use super::*;

    fn complete(input: &[u8]) -> (Option<ProxiedAddresses>, usize) {
        match parse_any(input, 536).unwrap() {
            Parsed::Complete { header, len } => {
                assert_eq!(header.version, ProxyVersion::V1);
                (header.addresses, len)
            }
            Parsed::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn tcp4_tcp6_unknown() {
        let (a, len) = complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET");
        let a = a.unwrap();
        assert_eq!(a.source.to_string(), "192.168.0.1:56324");
        assert_eq!(a.destination.to_string(), "192.168.0.11:443");
        assert_eq!(len, 47);
        let (a, _) = complete(b"PROXY TCP6 ::1 2001:db8::ff 1 65535\r\n");
        let a = a.unwrap();
        assert_eq!(a.source.to_string(), "[::1]:1");
        assert_eq!(a.destination.to_string(), "[2001:db8::ff]:65535");
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (None, 15));
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(complete(unknown), (None, unknown.len()));
    }

    #[test]
    fn the_longest_line_fits() {
        let v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {v6} {v6} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        assert!(complete(tcp6.as_bytes()).0.is_some());
        // The specification's worst case: UNKNOWN followed by the longest TCP6 fields.
        let unknown = format!("PROXY UNKNOWN {v6} {v6} 65535 65535\r\n");
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(complete(unknown.as_bytes()), (None, V1_MAX_LEN));
    }

    #[test]
    fn partial_lines_wait() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for n in 0..line.len() {
            assert_eq!(parse_any(&line[..n], 536), Ok(Parsed::Incomplete), "{n}");
        }
    }

    #[test]
    fn malformed_lines() {
        use ProxyError::*;
        let cases: &[(&[u8], ProxyError)] = &[
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1BareCrLf),
            (b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", V1BareCrLf),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1BareCrLf),
            (b"PROXY UNKNOWN\n", V1BareCrLf),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                V1Malformed("missing source address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                V1Malformed("extra fields or spaces after the ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                V1Malformed("extra fields or spaces after the ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                V1Malformed("missing destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                V1Malformed("a port is not a number from 0 to 65535 without leading zeros"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
                V1Malformed("a port is not a number from 0 to 65535 without leading zeros"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                V1Malformed("a port is above 65535"),
            ),
            (
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                V1Malformed("source is not an IPv4 address"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                V1Malformed("source is not an IPv4 address"),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                V1Malformed("source is not an IPv6 address"),
            ),
            (
                b"PROXY TCP6 ::1 fe80::1%1 1 2\r\n",
                V1Malformed("destination is not an IPv6 address"),
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
                V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (b"PROXY \r\n", V1Malformed("missing protocol")),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.\xff 1 2\r\n",
                V1Malformed("non-ASCII bytes"),
            ),
            (b"PROXY\r\n", BadSignature),
            (b"proxy TCP4", BadSignature),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_any(input, 536).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn no_crlf_within_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse_any(&line, 536), Ok(Parsed::Incomplete));
        line.push(b'\r');
        assert_eq!(parse_any(&line, 536), Err(ProxyError::V1NoCrlf));
        line.pop();
        line.push(b'x');
        assert_eq!(parse_any(&line, 536), Err(ProxyError::V1NoCrlf));
    }
}
