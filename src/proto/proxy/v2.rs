//! PROXY v2: a 16-byte binary preamble, the addresses, then TLVs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Parsed, ProxiedAddresses, ProxyError, ProxyHeader, ProxyVersion};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Signature, version/command, family, length.
const PREAMBLE: usize = 16;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const FAM_UNSPEC: u8 = 0x00;
const FAM_TCP4: u8 = 0x11;
const FAM_TCP6: u8 = 0x21;
const FAM_UNIX_STREAM: u8 = 0x31;
/// Type of the TLV holding a CRC32C of the whole header.
const TLV_CRC32C: u8 = 0x03;

/// Parses a buffer that starts with the signature's first byte.
pub(super) fn parse(buf: &[u8], max_header: usize) -> Result<Parsed, ProxyError> {
    let n = buf.len().min(SIGNATURE.len());
    if buf[..n] != SIGNATURE[..n] {
        return Err(ProxyError::BadSignature);
    }
    // Judge each preamble byte as soon as it arrives.
    let command = match buf.get(12) {
        None => return Ok(Parsed::Incomplete),
        Some(&vc) if vc >> 4 != 2 => return Err(ProxyError::V2BadVersion(vc >> 4)),
        Some(&vc) if vc & 0x0F > CMD_PROXY => return Err(ProxyError::V2BadCommand(vc & 0x0F)),
        Some(&vc) => vc & 0x0F,
    };
    let family = match buf.get(13) {
        None => return Ok(Parsed::Incomplete),
        // LOCAL discards the address block, family included.
        Some(&f) if command == CMD_LOCAL => f,
        Some(&f) if matches!(f, FAM_UNSPEC | FAM_TCP4 | FAM_TCP6 | FAM_UNIX_STREAM) => f,
        Some(&f) => return Err(ProxyError::V2BadFamily(f)),
    };
    let Some(&[hi, lo]) = buf.get(14..PREAMBLE) else {
        return Ok(Parsed::Incomplete);
    };
    let len = PREAMBLE + usize::from(u16::from_be_bytes([hi, lo]));
    if len > max_header {
        return Err(ProxyError::TooLong { len, max: max_header });
    }
    let Some(header) = buf.get(..len) else {
        return Ok(Parsed::Incomplete);
    };
    let addresses = if command == CMD_LOCAL {
        None
    } else {
        addresses(header, family)?
    };
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version: ProxyVersion::V2,
            addresses,
        },
        len,
    })
}

/// The addresses of a complete PROXY-command header, after checking its TLVs.
fn addresses(header: &[u8], family: u8) -> Result<Option<ProxiedAddresses>, ProxyError> {
    let body = &header[PREAMBLE..];
    let need = match family {
        FAM_TCP4 => 12,
        FAM_TCP6 => 36,
        FAM_UNIX_STREAM => 216,
        // UNSPEC: the block has no defined layout; it is skipped whole.
        _ => return Ok(None),
    };
    if body.len() < need {
        return Err(ProxyError::V2ShortAddresses {
            family,
            len: body.len(),
            need,
        });
    }
    check_tlvs(header, PREAMBLE + need)?;
    let ports = |at: usize| {
        (
            u16::from_be_bytes([body[at], body[at + 1]]),
            u16::from_be_bytes([body[at + 2], body[at + 3]]),
        )
    };
    let (src, dst, (sport, dport)): (IpAddr, IpAddr, _) = match family {
        FAM_TCP4 => (ipv4(&body[0..4]).into(), ipv4(&body[4..8]).into(), ports(8)),
        FAM_TCP6 => (ipv6(&body[0..16]).into(), ipv6(&body[16..32]).into(), ports(32)),
        // A Unix-socket client has no IP endpoint: the real addresses stand.
        _ => return Ok(None),
    };
    Ok(Some(ProxiedAddresses {
        source: SocketAddr::new(src, sport).into(),
        destination: SocketAddr::new(dst, dport).into(),
    }))
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    let mut o = [0u8; 4];
    o.copy_from_slice(b);
    Ipv4Addr::from(o)
}

fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

/// Walks the TLVs from `start` to the end of the header: each must fit, and a CRC32C TLV must
/// match the header.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), ProxyError> {
    let mut at = start;
    while at < header.len() {
        let Some(&[kind, hi, lo]) = header.get(at..at + 3) else {
            return Err(ProxyError::V2BadTlv(at));
        };
        let value = at + 3;
        let end = value + usize::from(u16::from_be_bytes([hi, lo]));
        if end > header.len() {
            return Err(ProxyError::V2BadTlv(at));
        }
        if kind == TLV_CRC32C {
            let Some(&[a, b, c, d]) = header.get(value..end) else {
                return Err(ProxyError::V2BadTlv(at));
            };
            // The checksum covers the whole header with its own value taken as zero.
            let crc = crc32c(crc32c(crc32c(!0, &header[..value]), &[0; 4]), &header[end..]);
            if !crc != u32::from_be_bytes([a, b, c, d]) {
                return Err(ProxyError::V2BadChecksum);
            }
        }
        at = end;
    }
    Ok(())
}

/// Continues a CRC32C (Castagnoli, reflected) over `data`. Start from `!0` and invert the
/// result. Headers are short, so the bitwise form is fast enough.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::parse as parse_any;
    use super::*;

    /// Builds a v2 header: version/command byte, family byte, body.
    pub(crate) fn header(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    /// The body of a TCP4 header from 192.0.2.1:56324 to 198.51.100.2:443.
    pub(crate) fn tcp4_body() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 1, 198, 51, 100, 2];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    fn complete(input: &[u8]) -> (Option<ProxiedAddresses>, usize) {
        match parse_any(input, 536).unwrap() {
            Parsed::Complete { header, len } => {
                assert_eq!(header.version, ProxyVersion::V2);
                (header.addresses, len)
            }
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn tcp4_and_tcp6() {
        let h = header(0x21, FAM_TCP4, &tcp4_body());
        let (a, len) = complete(&[h.as_slice(), b"after"].concat());
        let a = a.unwrap();
        assert_eq!(a.source.to_string(), "192.0.2.1:56324");
        assert_eq!(a.destination.to_string(), "198.51.100.2:443");
        assert_eq!(len, 28);
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 80, 0xff, 0xff]);
        let (a, len) = complete(&header(0x21, FAM_TCP6, &body));
        let a = a.unwrap();
        assert_eq!(a.source.to_string(), "[2001:db8::1]:80");
        assert_eq!(a.destination.to_string(), "[::1]:65535");
        assert_eq!(len, 52);
    }

    #[test]
    fn local_unspec_and_unix_keep_the_real_addresses() {
        // LOCAL: the length is honoured and the block ignored, whatever its family.
        assert_eq!(complete(&header(0x20, FAM_UNSPEC, &[])), (None, 16));
        assert_eq!(complete(&header(0x20, FAM_TCP4, &tcp4_body())), (None, 28));
        assert_eq!(complete(&header(0x20, 0xff, &[1, 2, 3])), (None, 19));
        assert_eq!(complete(&header(0x21, FAM_UNSPEC, &[9; 7])), (None, 23));
        assert_eq!(complete(&header(0x21, FAM_UNIX_STREAM, &[0; 216])), (None, 232));
    }

    #[test]
    fn tlvs_are_skipped() {
        let mut body = tcp4_body();
        body.extend(tlv(0x01, b"h2"));
        body.extend(tlv(0x04, &[]));
        body.extend(tlv(0xE0, &[7; 40]));
        let h = header(0x21, FAM_TCP4, &body);
        let (a, len) = complete(&h);
        assert_eq!(a.unwrap().source.port(), 56324);
        assert_eq!(len, h.len());
    }

    #[test]
    fn crc32c_tlv_is_checked() {
        let mut body = tcp4_body();
        body.extend(tlv(TLV_CRC32C, &[0; 4]));
        let mut h = header(0x21, FAM_TCP4, &body);
        let crc = !crc32c(!0, &h);
        let at = h.len() - 4;
        h[at..].copy_from_slice(&crc.to_be_bytes());
        assert!(complete(&h).0.is_some());
        h[at] ^= 1;
        assert_eq!(parse_any(&h, 536), Err(ProxyError::V2BadChecksum));
    }

    #[test]
    fn malformed_headers() {
        use ProxyError::*;
        let body = tcp4_body();
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (header(0x11, FAM_TCP4, &body), V2BadVersion(1)),
            (header(0x31, FAM_TCP4, &body), V2BadVersion(3)),
            (header(0x22, FAM_TCP4, &body), V2BadCommand(2)),
            (header(0x2F, FAM_TCP4, &body), V2BadCommand(15)),
            (header(0x21, 0x12, &body), V2BadFamily(0x12)),
            (header(0x21, 0x41, &body), V2BadFamily(0x41)),
            (header(0x21, 0x10, &body), V2BadFamily(0x10)),
            (
                header(0x21, FAM_TCP4, &body[..11]),
                V2ShortAddresses {
                    family: FAM_TCP4,
                    len: 11,
                    need: 12,
                },
            ),
            (
                header(0x21, FAM_TCP6, &[0; 12]),
                V2ShortAddresses {
                    family: FAM_TCP6,
                    len: 12,
                    need: 36,
                },
            ),
            (
                header(0x21, FAM_TCP4, &[body.as_slice(), &[1, 0]].concat()),
                V2BadTlv(28),
            ),
            (
                header(0x21, FAM_TCP4, &[body.as_slice(), &[1, 0, 5, 1]].concat()),
                V2BadTlv(28),
            ),
            (
                header(
                    0x21,
                    FAM_TCP4,
                    &[body.as_slice(), &tlv(TLV_CRC32C, &[0; 3])].concat(),
                ),
                V2BadTlv(28),
            ),
            (header(0x21, FAM_TCP4, &[0; 600]), TooLong { len: 616, max: 536 }),
        ];
        for (input, want) in &cases {
            assert_eq!(parse_any(input, 536).as_ref(), Err(want), "{input:02x?}");
        }
        // A bad preamble byte is rejected as soon as it arrives.
        let h = header(0x11, FAM_TCP4, &body);
        assert_eq!(parse_any(&h[..13], 536), Err(V2BadVersion(1)));
        let h = header(0x21, 0x99, &body);
        assert_eq!(parse_any(&h[..14], 536), Err(V2BadFamily(0x99)));
        let mut sig = SIGNATURE;
        sig[11] = b'X';
        assert_eq!(parse_any(&sig, 536), Err(BadSignature));
    }

    #[test]
    fn partial_headers_wait() {
        let mut body = tcp4_body();
        body.extend(tlv(0x02, b"example.com"));
        let h = header(0x21, FAM_TCP4, &body);
        for n in 0..h.len() {
            assert_eq!(parse_any(&h[..n], 536), Ok(Parsed::Incomplete), "{n}");
        }
    }
}
