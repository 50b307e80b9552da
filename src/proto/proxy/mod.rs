//! The PROXY protocol, versions 1 and 2 (HAProxy's `doc/proxy-protocol.txt`), free of I/O.
//!
//! A load balancer in TCP mode (HAProxy `send-proxy`/`send-proxy-v2`, Envoy, the cloud
//! balancers) opens each connection with a header naming the client it relays. A listener
//! configured for it ([`ProxyConfig`]) never guesses: the header is required, only peers in
//! the trusted list may send one, it must be complete within a deadline, and it may not exceed
//! a size cap.
//!
//! [`ProxyDecoder`] is a [`Decoder`](crate::codec::Decoder) whose frame is the header: it
//! takes the bytes as they arrive, split anywhere, and consumes exactly the header, so that
//! everything after it reaches the protocol untouched. Every malformed form is a typed
//! [`ProxyError`].
//!
//! ```
//! use weft::codec::{Decoder, InBuf};
//! use weft::proxy::{ProxyDecoder, DEFAULT_MAX_HEADER};
//!
//! let mut decoder = ProxyDecoder::new(DEFAULT_MAX_HEADER);
//! let mut buf = InBuf::new();
//! buf.extend(b"PROXY TCP4 192.0.2.1 ");
//! assert!(decoder.decode(&mut buf).unwrap().is_none());
//! buf.extend(b"198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n");
//! let header = decoder.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(header.addresses.unwrap().source.to_string(), "192.0.2.1:56324");
//! assert_eq!(buf.as_slice(), b"GET / HTTP/1.1\r\n");
//! ```
//!
//! Without an [`InBuf`](crate::codec::InBuf), [`ProxyDecoder::feed`] says how many bytes of
//! the last chunk were header:
//!
//! ```
//! use weft::proxy::{ProxyDecoder, DEFAULT_MAX_HEADER};
//!
//! let mut decoder = ProxyDecoder::new(DEFAULT_MAX_HEADER);
//! assert!(decoder.feed(b"PROXY TCP4 192.0.2.1 ").unwrap().is_none());
//! let chunk = b"198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
//! let done = decoder.feed(chunk).unwrap().unwrap();
//! let addrs = done.header.addresses.unwrap();
//! assert_eq!(addrs.source.to_string(), "192.0.2.1:56324");
//! assert_eq!(&chunk[done.consumed..], b"GET / HTTP/1.1\r\n");
//! ```

mod cidr;
mod v1;
mod v2;

use std::net::IpAddr;
use std::time::Duration;

pub use cidr::{Cidr, CidrError};
pub use v2::SIGNATURE as V2_SIGNATURE;

use crate::addr::Address;
use crate::proto::codec::{Decoder, InBuf};

/// Longest v1 header, CRLF included (the specification's limit).
pub const V1_MAX_LEN: usize = 107;
/// Default cap on a v2 header, in bytes: the 16-byte preamble plus room for the longest
/// address block (216 bytes for Unix paths) and about 300 bytes of TLVs.
pub const DEFAULT_MAX_HEADER: usize = 536;
/// The smallest [`ProxyConfig::max_header`] accepted: a v2 header for IPv6 addresses without
/// TLVs (16 bytes of preamble, 36 of addresses and ports); below it, every IPv6 client's
/// header would be refused.
pub const MIN_MAX_HEADER: usize = 52;
/// Default time a peer has to send the whole header after the connection is accepted.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text form: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary form, starting with [`V2_SIGNATURE`].
    V2,
}

/// The client and the address it connected to, as the balancer claims them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddresses {
    /// The client's address.
    pub source: Address,
    /// The address the client connected to (the balancer's frontend).
    pub destination: Address,
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The protocol version used.
    pub version: ProxyVersion,
    /// The relayed addresses, or `None` when the connection's real addresses stand: a v1
    /// `UNKNOWN`, a v2 `LOCAL` (the balancer's own health check), a v2 `UNSPEC` family, or a
    /// v2 Unix-socket family (not an IP endpoint).
    pub addresses: Option<ProxiedAddresses>,
}

/// Why a header was rejected. The connection is closed without reaching a protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The first bytes are neither `PROXY ` nor the v2 signature.
    #[error(
        "not a PROXY protocol header: the peer must send a v1 or v2 header first (HAProxy: \
         send-proxy or send-proxy-v2), or this listener must not require one"
    )]
    BadSignature,
    /// A v1 line had no CRLF within its 107 bytes.
    #[error("PROXY v1 header without CRLF within {V1_MAX_LEN} bytes")]
    V1NoCrlf,
    /// A v1 line held a CR not followed by LF, or an LF not preceded by CR.
    #[error("PROXY v1 header with a bare CR or LF")]
    V1BareCrLf,
    /// A v1 line was not `PROXY TCP4|TCP6|UNKNOWN src dst sport dport`.
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    /// The v2 version nibble was not 2.
    #[error("PROXY v2 header with version {0} (only 2 exists)")]
    V2BadVersion(u8),
    /// The v2 command was neither LOCAL (0) nor PROXY (1).
    #[error("PROXY v2 header with unknown command {0}")]
    V2BadCommand(u8),
    /// The v2 address family and transport byte is not one this stream listener accepts
    /// (UNSPEC 0x00, TCP over IPv4 0x11, TCP over IPv6 0x21, Unix stream 0x31).
    #[error("PROXY v2 header with unsupported address family/transport byte {0:#04x}")]
    V2BadFamily(u8),
    /// The v2 header is longer than the listener's cap.
    #[error(
        "PROXY v2 header of {len} bytes exceeds the cap of {max} bytes (raise the listener's \
         max_header if the balancer sends large TLVs)"
    )]
    TooLong {
        /// The header's length as announced.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The v2 length is too short for the addresses of its family.
    #[error("PROXY v2 header of family {family:#04x} has {len} address bytes, needs {need}")]
    V2ShortAddresses {
        /// The family and transport byte.
        family: u8,
        /// Bytes after the 16-byte preamble.
        len: usize,
        /// Bytes the family's addresses need.
        need: usize,
    },
    /// A v2 TLV runs past the end of the header, or the CRC32C TLV is not 4 bytes long.
    #[error("PROXY v2 header with a malformed TLV at offset {0}")]
    V2BadTlv(usize),
    /// The v2 CRC32C TLV does not match the header.
    #[error("PROXY v2 header fails its CRC32C checksum")]
    V2BadChecksum,
}

/// The outcome of parsing a buffer that starts at the first byte of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// A complete header of `len` bytes.
    Complete {
        /// The header.
        header: ProxyHeader,
        /// Its exact length in bytes; what follows belongs to the protocol.
        len: usize,
    },
}

/// Parses the start of a connection's bytes. `max_header` caps a v2 header (a v1 line is
/// capped at [`V1_MAX_LEN`] by the specification). Rejects as early as the bytes allow: a
/// wrong first byte is an error at once, not after a deadline.
///
/// # Errors
///
/// The first rule the bytes break.
pub fn parse(buf: &[u8], max_header: usize) -> Result<Parsed, ProxyError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => v1::parse(buf),
        Some(&b) if b == V2_SIGNATURE[0] => v2::parse(buf, max_header),
        Some(_) => Err(ProxyError::BadSignature),
    }
}

/// A complete header out of [`ProxyDecoder::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The header.
    pub header: ProxyHeader,
    /// How many bytes of the chunk just fed were header; the rest of it belongs to the
    /// protocol.
    pub consumed: usize,
}

/// Cuts the header off the front of a connection's bytes: a [`Decoder`] whose frame is the
/// header. The bytes after it stay in the buffer: they are the protocol's first read (a
/// connection has one header, so its caller decodes one frame, then hands the rest on).
///
/// Rejects as early as the bytes allow, and never waits for more than
/// [`limit`](Self::limit) bytes. [`feed`](Self::feed) does the same for a caller without an
/// [`InBuf`].
#[derive(Debug, Clone)]
pub struct ProxyDecoder {
    max_header: usize,
    /// Header bytes of the chunks fed so far.
    held: InBuf<'static>,
}

impl ProxyDecoder {
    /// A decoder that rejects v2 headers over `max_header` bytes.
    pub fn new(max_header: usize) -> Self {
        Self {
            max_header,
            held: InBuf::new(),
        }
    }

    /// Most bytes a header may take (a v2 header's cap, or a v1 line's 107 bytes): a read
    /// of this size can hold a whole header.
    pub fn limit(&self) -> usize {
        self.max_header.max(V1_MAX_LEN)
    }

    /// Feeds the next chunk. `Ok(None)`: the whole chunk was header and more is needed.
    /// The decoder holds at most [`limit`](Self::limit) bytes.
    ///
    /// # Errors
    ///
    /// The header is malformed or too long; the connection must be closed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Decoded>, ProxyError> {
        let held = self.held.len();
        let take = data.len().min(self.limit().saturating_sub(held));
        let mut buf = std::mem::take(&mut self.held);
        buf.extend(&data[..take]);
        match self.decode(&mut buf)? {
            // What is left of the taken bytes followed the header.
            Some(header) => Ok(Some(Decoded {
                header,
                consumed: take.saturating_sub(buf.len()),
            })),
            None if take == data.len() => {
                self.held = buf;
                Ok(None)
            }
            None => Err(ProxyError::TooLong {
                len: held + data.len(),
                max: self.limit(),
            }),
        }
    }
}

impl Decoder for ProxyDecoder {
    type Frame = ProxyHeader;
    type Error = ProxyError;

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<ProxyHeader>, ProxyError> {
        match parse(buf.as_slice(), self.max_header)? {
            Parsed::Complete { header, len } => {
                buf.advance(len);
                Ok(Some(header))
            }
            // The parsers reject a header that cannot fit the limit before the limit is
            // reached; the bound holds regardless.
            Parsed::Incomplete if buf.len() < self.limit() => Ok(None),
            Parsed::Incomplete => Err(ProxyError::TooLong {
                len: buf.len(),
                max: self.limit(),
            }),
        }
    }
}

/// The PROXY protocol settings of one listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Peers allowed to send a header: every other peer is closed before anything is read.
    /// Default: empty, which trusts no one (list the balancers, or `0.0.0.0/0` and `::/0`
    /// deliberately).
    pub trusted: Vec<Cidr>,
    /// Time from accept to a complete header; a peer still sending then is closed.
    /// Default: 3 s ([`DEFAULT_HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// Largest v2 header accepted, TLVs included. Default: 536 bytes ([`DEFAULT_MAX_HEADER`]).
    pub max_header: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header: DEFAULT_MAX_HEADER,
        }
    }
}

impl ProxyConfig {
    /// The default settings, trusting `trusted`.
    pub fn trusting(trusted: Vec<Cidr>) -> Self {
        Self {
            trusted,
            ..Self::default()
        }
    }

    /// Refuses a header timeout of 0 (every connection closed before its header arrives) and
    /// a [`max_header`](Self::max_header) below [`MIN_MAX_HEADER`].
    /// [`ListenerConfig::validate`](crate::ListenerConfig::validate) calls it.
    ///
    /// # Errors
    ///
    /// The first such setting, as a [`ConfigError`](crate::ConfigError) naming it
    /// `proxy.header_timeout` or `proxy.max_header`.
    pub fn validate(&self) -> Result<(), crate::proto::settings::ConfigError> {
        crate::proto::settings::require_positive(
            "proxy.header_timeout",
            self.header_timeout,
            "would close every connection before its PROXY header arrives",
            "3s",
        )?;
        if self.max_header < MIN_MAX_HEADER {
            return Err(crate::proto::settings::ConfigError::new(
                "proxy.max_header",
                self.max_header,
                format!(
                    "would refuse the PROXY v2 header of every IPv6 client: give at least \
                     {MIN_MAX_HEADER} bytes ({DEFAULT_MAX_HEADER} by default, more for large TLVs)"
                ),
            ));
        }
        Ok(())
    }

    /// True if a connection from `ip` may send a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the header and what followed it.
    fn feed_split(input: &[u8], step: usize) -> Result<(ProxyHeader, Vec<u8>), ProxyError> {
        let mut d = ProxyDecoder::new(DEFAULT_MAX_HEADER);
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let chunk = &input[pos..end];
            if let Some(done) = d.feed(chunk)? {
                let mut rest = chunk[done.consumed..].to_vec();
                rest.extend_from_slice(&input[end..]);
                return Ok((done.header, rest));
            }
            pos = end;
        }
        panic!("incomplete after {} bytes", input.len());
    }

    #[test]
    fn every_split_gives_the_same_header_and_tail() {
        let mut input = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n".to_vec();
        input.extend_from_slice(b"payload\r\n\x00tail");
        for step in 1..=input.len() {
            let (h, rest) = feed_split(&input, step).unwrap();
            let a = h.addresses.unwrap();
            assert_eq!(a.source.to_string(), "[2001:db8::1]:65535");
            assert_eq!(a.destination.to_string(), "[2001:db8::2]:0");
            assert_eq!(rest, b"payload\r\n\x00tail", "step {step}");
        }
    }

    #[test]
    fn first_byte_decides() {
        assert_eq!(parse(b"", 536), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n", 536), Err(ProxyError::BadSignature));
        assert_eq!(parse(b"\x16\x03\x01", 536), Err(ProxyError::BadSignature));
        assert_eq!(parse(b"PR", 536), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRoXY", 536), Err(ProxyError::BadSignature));
        assert_eq!(parse(b"\r\n\r\n\x00\r\nQ", 536), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r\n\x01", 536), Err(ProxyError::BadSignature));
    }

    #[test]
    fn decoder_never_holds_more_than_its_limit() {
        let mut d = ProxyDecoder::new(16);
        // A v2 header whose announced length exceeds the cap fails at byte 16.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        let err = d.feed(&h).unwrap_err();
        assert_eq!(err, ProxyError::TooLong { len: 28, max: 16 });
        // A v1 line stops at 107 bytes whatever the cap.
        let mut d = ProxyDecoder::new(4096);
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(d.feed(&long), Err(ProxyError::V1NoCrlf));
    }

    #[test]
    fn trust_list() {
        let c = ProxyConfig::trusting(Cidr::parse_list("127.0.0.0/8,::1").unwrap());
        assert!(c.trusts("127.1.2.3".parse().unwrap()));
        assert!(c.trusts("::1".parse().unwrap()));
        assert!(c.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.trusts("10.0.0.1".parse().unwrap()));
        assert!(!ProxyConfig::default().trusts("127.0.0.1".parse().unwrap()));
    }

    /// Feeds `chunks` through the [`Decoder`] until the header: the header and every byte
    /// after it, the error, or `None` while incomplete.
    fn decode_chunks(chunks: &[&[u8]]) -> Option<Result<(ProxyHeader, Vec<u8>), ProxyError>> {
        let mut d = ProxyDecoder::new(DEFAULT_MAX_HEADER);
        let mut buf = InBuf::new();
        for (i, chunk) in chunks.iter().enumerate() {
            buf.extend(chunk);
            match d.decode(&mut buf) {
                Ok(Some(header)) => {
                    let mut rest = buf.as_slice().to_vec();
                    chunks[i + 1..].iter().for_each(|c| rest.extend_from_slice(c));
                    return Some(Ok((header, rest)));
                }
                Ok(None) => assert!(buf.len() < d.limit(), "bounded"),
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    fn proxied(source: &str, destination: &str) -> Option<ProxiedAddresses> {
        Some(ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    /// Input (a header, then what the protocol gets), and the header with the bytes left
    /// after it, or the error.
    type DecodeCase = (Vec<u8>, Result<(ProxyHeader, Vec<u8>), ProxyError>);

    fn decode_cases() -> Vec<DecodeCase> {
        use super::v2::tests::{header, tcp4_body};
        let v1 = |addresses| ProxyHeader {
            version: ProxyVersion::V1,
            addresses,
        };
        let v2 = |addresses| ProxyHeader {
            version: ProxyVersion::V2,
            addresses,
        };
        let tcp4 = proxied("192.0.2.1:56324", "198.51.100.2:443");
        let mut longest = b"PROXY UNKNOWN ".to_vec();
        longest.resize(V1_MAX_LEN - 2, b'x');
        longest.extend_from_slice(b"\r\n");
        let mut no_crlf = b"PROXY UNKNOWN ".to_vec();
        no_crlf.resize(V1_MAX_LEN + 10, b'x');
        vec![
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n".to_vec(),
                Ok((v1(tcp4), b"GET / HTTP/1.1\r\n".to_vec())),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n\r\n\x00".to_vec(),
                Ok((
                    v1(proxied("[2001:db8::1]:65535", "[2001:db8::2]:0")),
                    b"\r\n\x00".to_vec(),
                )),
            ),
            (
                b"PROXY UNKNOWN ignored\r\nx".to_vec(),
                Ok((v1(None), b"x".to_vec())),
            ),
            (longest.clone(), Ok((v1(None), Vec::new()))),
            (
                [header(0x21, 0x11, &tcp4_body()), b"\x16\x03\x01".to_vec()].concat(),
                Ok((v2(tcp4), b"\x16\x03\x01".to_vec())),
            ),
            (
                [header(0x20, 0x00, &[]), b"hello".to_vec()].concat(),
                Ok((v2(None), b"hello".to_vec())),
            ),
            (b"GET / HTTP/1.1\r\n".to_vec(), Err(ProxyError::BadSignature)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                Err(ProxyError::V1BareCrLf),
            ),
            (no_crlf, Err(ProxyError::V1NoCrlf)),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
                Err(ProxyError::V1Malformed("a port is above 65535")),
            ),
            (header(0x31, 0x11, &tcp4_body()), Err(ProxyError::V2BadVersion(3))),
            (
                header(0x21, 0x11, &[0; 600]),
                Err(ProxyError::TooLong { len: 616, max: 536 }),
            ),
        ]
    }

    #[test]
    fn decoder_cases_at_every_split_point() {
        for (input, want) in decode_cases() {
            let name = String::from_utf8_lossy(&input).into_owned();
            assert_eq!(decode_chunks(&[&input]).as_ref(), Some(&want), "{name}");
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                assert_eq!(
                    decode_chunks(&[a, b]).as_ref(),
                    Some(&want),
                    "{name} split at {at}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_chunks(&bytes).as_ref(), Some(&want), "{name} byte by byte");
            // `feed` agrees, at every step.
            for step in 1..=input.len() {
                assert_eq!(feed_split(&input, step), want, "{name} fed by {step}");
            }
        }
    }

    #[test]
    fn decoder_waits_for_a_partial_header_and_takes_nothing() {
        let mut d = ProxyDecoder::new(DEFAULT_MAX_HEADER);
        let mut buf = InBuf::new();
        for part in [b"".as_slice(), b"PRO", b"XY TCP4 1.2.3.4 5.6.7.8 1 2\r"] {
            buf.extend(part);
            let before = buf.as_slice().to_vec();
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert_eq!(buf.as_slice(), before, "nothing consumed");
        }
        buf.extend(b"\n");
        assert!(d.decode(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
    }
}
