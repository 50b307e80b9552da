//! RESP2, the Redis serialization protocol, free of I/O: a request parser that is a
//! [`Decoder`] (multibulk arrays and inline commands, with redis-server 7's exact protocol
//! errors and limits), replies ([`Reply`], written in RESP2 or, for a connection that asked
//! with `HELLO 3`, RESP3: [`Reply::encode_as`]) and [`RespEncoder`], which writes replies and,
//! for clients, requests; and for clients a reply parser ([`ReplyDecoder`], RESP2).
//!
//! The parser follows redis's `processMultibulkBuffer` and `processInlineBuffer`, quirks
//! included, so that a peer sees the same answers from weft as from redis-server for the same
//! bytes: a line ends at its `\r` (the byte after it is not checked), a NUL byte before the end
//! of a line keeps the line incomplete (redis searches with `strchr`), a bulk string is followed
//! by two bytes that are skipped unread, and `*0` or `*-1` are empty requests that get no
//! answer. It never allocates a length a peer announces: a bulk string is taken once all its
//! bytes are in the buffer, and argument vectors grow as arguments arrive.
//!
//! ```
//! use weft::codec::{Decoder, InBuf};
//! use weft::resp::{Reply, RespDecoder, RespError};
//!
//! let mut decoder = RespDecoder::default();
//! let mut buf = InBuf::new();
//! buf.extend(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*x\r\n");
//! assert_eq!(decoder.decode(&mut buf).unwrap(), Some(vec![b"GET".to_vec(), b"k".to_vec()]));
//! assert_eq!(decoder.decode(&mut buf).unwrap(), Some(vec![b"PING".to_vec()]));
//! let error = decoder.decode(&mut buf).unwrap_err();
//! assert_eq!(error, RespError::InvalidMultibulkLength);
//! assert_eq!(error.reply().unwrap(), b"-ERR Protocol error: invalid multibulk length\r\n");
//!
//! let mut out = Vec::new();
//! Reply::Array(vec![Reply::Bulk(b"v".to_vec()), Reply::Nil]).encode(&mut out);
//! assert_eq!(out, b"*2\r\n$1\r\nv\r\n$-1\r\n");
//!
//! // A client's side: a command out, its reply back.
//! use weft::codec::Encoder;
//! use weft::resp::{ReplyDecoder, RespEncoder};
//! let mut ping = Vec::new();
//! RespEncoder.encode(["PING"].as_slice(), &mut ping).unwrap();
//! assert_eq!(ping, b"*1\r\n$4\r\nPING\r\n");
//! let mut replies = InBuf::new();
//! replies.extend(b"+PONG\r\n");
//! assert_eq!(ReplyDecoder::default().decode(&mut replies).unwrap(), Some(Reply::Status("PONG".into())));
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::proto::codec::{Decoder, Encoder, InBuf};

/// Longest bulk string a request may carry (redis's `proto-max-bulk-len`, 512 MB).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Longest inline request, and longest count line, that may stay without its end
/// (redis's `PROTO_INLINE_MAX_SIZE`, 64 KiB).
pub const MAX_INLINE_LEN: usize = 64 * 1024;
/// Most memory one request may hold while it arrives (redis's `client-query-buffer-limit`,
/// 1 GiB): its arguments' bytes plus [`ARG_OVERHEAD`] each.
pub const MAX_REQUEST: usize = 1024 * 1024 * 1024;
/// What each argument costs besides its bytes, counted against [`RespLimits::max_request`].
pub const ARG_OVERHEAD: usize = 32;
/// How many argument slots a request reserves before its arguments arrive (redis: 1024).
const RESERVE_ARGS: usize = 1024;

/// One request: the command name and its arguments, as byte strings.
pub type Request = Vec<Vec<u8>>;

/// The parser's limits; the default is redis-server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string ([`MAX_BULK_LEN`]).
    pub max_bulk: usize,
    /// Longest inline request or count line without its end ([`MAX_INLINE_LEN`]).
    pub max_inline: usize,
    /// Most bytes one request may hold ([`MAX_REQUEST`]).
    pub max_request: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        Self {
            max_bulk: MAX_BULK_LEN,
            max_inline: MAX_INLINE_LEN,
            max_request: MAX_REQUEST,
        }
    }
}

/// Why a byte stream is not RESP. Every kind but [`RequestTooLarge`](Self::RequestTooLarge)
/// is answered with redis's text ([`reply`](Self::reply)) before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// `*` followed by something other than an integer up to 2^31-1.
    InvalidMultibulkLength,
    /// `$` followed by something other than an integer from 0 to the bulk limit.
    InvalidBulkLength,
    /// An argument of a multibulk request did not start with `$`: the byte it started with
    /// (a CR or LF shows as a space, as redis writes it).
    ExpectedDollar(u8),
    /// An inline request with an unterminated quote, or a closing quote not followed by a
    /// space.
    UnbalancedQuotes,
    /// An inline request longer than the inline limit without its end.
    TooBigInline,
    /// A `*` count line longer than the inline limit without its end.
    TooBigMbulkCount,
    /// A `$` length line longer than the inline limit without its end.
    TooBigBulkCount,
    /// The request would hold more than the request limit: closed without an answer, as
    /// redis closes a client past its query buffer limit.
    RequestTooLarge,
}

impl RespError {
    /// The error as redis words it, without the `ERR ` prefix.
    fn text(&self) -> Cow<'static, str> {
        match self {
            Self::InvalidMultibulkLength => "Protocol error: invalid multibulk length".into(),
            Self::InvalidBulkLength => "Protocol error: invalid bulk length".into(),
            Self::ExpectedDollar(b) => {
                format!("Protocol error: expected '$', got '{}'", char::from(*b)).into()
            }
            Self::UnbalancedQuotes => "Protocol error: unbalanced quotes in request".into(),
            Self::TooBigInline => "Protocol error: too big inline request".into(),
            Self::TooBigMbulkCount => "Protocol error: too big mbulk count string".into(),
            Self::TooBigBulkCount => "Protocol error: too big bulk count string".into(),
            Self::RequestTooLarge => "request exceeds the query buffer limit".into(),
        }
    }

    /// The bytes to answer with before closing, if any: `-ERR Protocol error: ...\r\n`.
    pub fn reply(&self) -> Option<Vec<u8>> {
        if *self == Self::RequestTooLarge {
            return None;
        }
        let mut out = Vec::new();
        match self {
            // The byte as it is, not as UTF-8: redis writes it with %c.
            Self::ExpectedDollar(b) => {
                out.extend_from_slice(b"-ERR Protocol error: expected '$', got '");
                out.push(*b);
                out.extend_from_slice(b"'\r\n");
            }
            _ => {
                out.extend_from_slice(b"-ERR ");
                out.extend_from_slice(self.text().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Some(out)
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::error::Error for RespError {}

/// Parses RESP2 requests, multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline
/// (`GET k\r\n`), one at a time and incrementally: each byte is looked at about once however
/// the stream is split. Empty requests are skipped. A server's side only: replies (`+OK`,
/// `$3`, ...) are not requests, and would be read as inline commands; a client reads them with
/// [`ReplyDecoder`].
#[derive(Debug, Clone, Default)]
pub struct RespDecoder {
    limits: RespLimits,
    /// Arguments of the multibulk request being read.
    args: Vec<Vec<u8>>,
    /// Arguments of that request still to come; 0 between requests.
    remaining: usize,
    /// The length of the bulk string being read, once its `$` line is in.
    bulk: Option<usize>,
    /// Bytes the request being read holds, for the request limit.
    held: usize,
    /// Bytes at the front of the buffer already searched for the end of the current line.
    searched: usize,
}

/// Where the line at the front of `bytes` ends, searching from `from`.
enum LineEnd {
    /// At this index (of the `\r` or `\n` searched for).
    At(usize),
    /// Not in the buffer yet; or a NUL byte comes first, which keeps it from ending (redis
    /// searches with `strchr`, which stops at NUL). The index to search from next time.
    NotYet(usize),
}

fn line_end(bytes: &[u8], from: usize, end: u8) -> LineEnd {
    let from = from.min(bytes.len());
    match bytes[from..].iter().position(|&b| b == end || b == 0) {
        Some(i) if bytes[from + i] == end => LineEnd::At(from + i),
        Some(i) => LineEnd::NotYet(from + i),
        None => LineEnd::NotYet(bytes.len()),
    }
}

impl RespDecoder {
    /// A decoder with these limits.
    pub fn new(limits: RespLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The decoder's limits.
    pub fn limits(&self) -> RespLimits {
        self.limits
    }

    /// Reads a `*N` or `$N` line at the front of `buf`: its number, or `None` until the line
    /// and the byte after its `\r` are in.
    fn count_line(
        &mut self,
        buf: &InBuf,
        too_big: RespError,
    ) -> Result<Option<(usize, Option<i64>)>, RespError> {
        let bytes = buf.as_slice();
        match line_end(bytes, self.searched, b'\r') {
            LineEnd::NotYet(at) => {
                self.searched = at;
                if bytes.len() > self.limits.max_inline {
                    return Err(too_big);
                }
                Ok(None)
            }
            // A line longer than the limit is refused however it arrived, so that the outcome
            // does not depend on how the stream was split.
            LineEnd::At(cr) if cr > self.limits.max_inline => Err(too_big),
            // The byte after the CR must be in (it is skipped, whatever it is).
            LineEnd::At(cr) if cr + 2 > bytes.len() => {
                self.searched = cr;
                Ok(None)
            }
            LineEnd::At(cr) => Ok(Some((cr + 2, bytes.get(1..cr).and_then(string2ll)))),
        }
    }

    fn consumed(&mut self, buf: &mut InBuf, n: usize) {
        buf.advance(n);
        self.searched = 0;
    }

    /// An inline request at the front of `buf`, or `None` until its `\n` is in.
    fn inline(&mut self, buf: &mut InBuf) -> Result<Option<Request>, RespError> {
        let bytes = buf.as_slice();
        let nl = match line_end(bytes, self.searched, b'\n') {
            LineEnd::NotYet(at) => {
                self.searched = at;
                // Longer than the limit even if its last byte is the CR of its end.
                if bytes.len() > self.limits.max_inline + 1 {
                    return Err(RespError::TooBigInline);
                }
                return Ok(None);
            }
            LineEnd::At(nl) => nl,
        };
        let line = match nl {
            n if n > 0 && bytes[n - 1] == b'\r' => &bytes[..n - 1],
            n => &bytes[..n],
        };
        if line.len() > self.limits.max_inline {
            return Err(RespError::TooBigInline);
        }
        let args = split_args(line).ok_or(RespError::UnbalancedQuotes)?;
        self.consumed(buf, nl + 1);
        Ok(Some(args))
    }
}

impl Decoder for RespDecoder {
    type Frame = Request;
    type Error = RespError;

    fn decode(&mut self, buf: &mut InBuf) -> Result<Option<Request>, RespError> {
        loop {
            if self.remaining == 0 {
                let Some(&first) = buf.as_slice().first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.inline(buf)? {
                        Some(args) if args.is_empty() => continue,
                        found => return Ok(found),
                    }
                }
                let Some((len, count)) = self.count_line(buf, RespError::TooBigMbulkCount)? else {
                    return Ok(None);
                };
                let count = match count {
                    Some(n) if n <= i64::from(i32::MAX) => n,
                    _ => return Err(RespError::InvalidMultibulkLength),
                };
                self.consumed(buf, len);
                if count <= 0 {
                    continue;
                }
                // At most i32::MAX, so it fits.
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                self.remaining = count;
                self.args = Vec::with_capacity(count.min(RESERVE_ARGS));
                self.held = 0;
            }
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let Some((line, len)) = self.count_line(buf, RespError::TooBigBulkCount)? else {
                        return Ok(None);
                    };
                    let first = buf.as_slice()[0];
                    if first != b'$' {
                        let shown = if first == b'\r' || first == b'\n' {
                            b' '
                        } else {
                            first
                        };
                        return Err(RespError::ExpectedDollar(shown));
                    }
                    let len = match len.map(usize::try_from) {
                        Some(Ok(n)) if n <= self.limits.max_bulk => n,
                        _ => return Err(RespError::InvalidBulkLength),
                    };
                    self.held = self.held.saturating_add(len + ARG_OVERHEAD);
                    if self.held > self.limits.max_request {
                        return Err(RespError::RequestTooLarge);
                    }
                    self.consumed(buf, line);
                    self.bulk = Some(len);
                    len
                }
            };
            // The bulk and the two bytes after it (skipped unread, as redis does).
            if buf.len() < len + 2 {
                return Ok(None);
            }
            self.args.push(buf.as_slice()[..len].to_vec());
            self.consumed(buf, len + 2);
            self.bulk = None;
            self.remaining -= 1;
            if self.remaining == 0 {
                return Ok(Some(std::mem::take(&mut self.args)));
            }
        }
    }
}

/// Redis's `string2ll`: a strict decimal `i64` (an optional `-`, no `+`, no leading zeros, no
/// spaces, at most 20 bytes), or `None`. Redis reads integers in requests and integer values
/// with it, so `INCR` on `"01"` fails as it does in redis.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: splits an inline request into arguments, with `"..."` (escapes
/// `\n \r \t \b \a \xHH`, and `\` before any other byte) and `'...'` (only `\'`) quoting.
/// `None` for unbalanced quotes, or a closing quote followed by something other than a space.
/// The line ends at a NUL byte, as the C string it is in redis.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        // The quote the argument is in, if any.
        let mut quote: Option<u8> = None;
        loop {
            let c = at(p);
            let Some(q) = quote else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' | b'\'' => quote = Some(c),
                    _ => current.push(c),
                }
                p += 1;
                continue;
            };
            if q == b'"'
                && c == b'\\'
                && at(p + 1) == b'x'
                && hex(at(p + 2)).is_some()
                && hex(at(p + 3)).is_some()
            {
                let (hi, lo) = (hex(at(p + 2)).unwrap_or(0), hex(at(p + 3)).unwrap_or(0));
                current.push(hi * 16 + lo);
                p += 3;
            } else if q == b'"' && c == b'\\' && at(p + 1) != 0 {
                p += 1;
                current.push(match at(p) {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
            } else if q == b'\'' && c == b'\\' && at(p + 1) == b'\'' {
                p += 1;
                current.push(b'\'');
            } else if c == q {
                // A closing quote ends the argument, and must end the word too.
                if at(p + 1) != 0 && !is_space(at(p + 1)) {
                    return None;
                }
                p += 2;
                break;
            } else if c == 0 {
                return None;
            } else {
                current.push(c);
            }
            p += 1;
        }
        args.push(current);
    }
}

/// The protocol a connection speaks, chosen with `HELLO 2` / `HELLO 3`: how a [`Reply`] is
/// written ([`Reply::encode_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RespVersion {
    /// RESP2, every connection's at first: nil as `$-1`, maps and sets as flat arrays,
    /// verbatim strings as bulk strings.
    #[default]
    Resp2,
    /// RESP3: nil as `_`, maps as `%`, sets as `~`, verbatim strings as `=`.
    Resp3,
}

impl RespVersion {
    /// The version number `HELLO` takes and reports (2 or 3).
    pub fn version(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }

    /// The nil reply's bytes: `$-1\r\n` or `_\r\n`.
    pub fn nil(self) -> &'static [u8] {
        match self {
            Self::Resp2 => NIL,
            Self::Resp3 => b"_\r\n",
        }
    }
}

/// A reply. Its `Debug` shows byte strings as escaped text (`Bulk("a\r\n")`). The RESP3
/// kinds ([`Map`](Self::Map), [`Set`](Self::Set), [`Verbatim`](Self::Verbatim)) are written as
/// their RESP2 counterparts to a RESP2 connection, as redis does.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status line (CR and LF in it are written as spaces).
    Status(Cow<'static, str>),
    /// `-ERR ...`: an error line with its code (`ERR`, `OOM`, `NOPROTO`...), without the
    /// `-` (CR and LF in it are written as spaces, as redis does with user input it quotes).
    Error(Cow<'static, [u8]>),
    /// `:123`.
    Integer(i64),
    /// `$3\r\nabc`.
    Bulk(Vec<u8>),
    /// `$-1`: the nil bulk string.
    Nil,
    /// `*N` and its elements.
    Array(Vec<Reply>),
    /// `%N` and its key-value pairs (RESP2: an array of 2N elements).
    Map(Vec<(Reply, Reply)>),
    /// `~N` and its elements (RESP2: an array).
    Set(Vec<Reply>),
    /// `=N\r\ntxt:` and the text (RESP2: a bulk string of the text).
    Verbatim(Vec<u8>),
}

/// The most bytes one reply element takes beyond its payload, in either protocol: its type
/// byte, its length or integer (20 digits at most), its line ends and a verbatim string's
/// `txt:`.
pub const REPLY_FRAMING: usize = 32;

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |bytes: &[u8]| bytes.escape_ascii().to_string();
        match self {
            Self::Status(s) => f.debug_tuple("Status").field(s).finish(),
            Self::Error(e) => f.debug_tuple("Error").field(&text(e)).finish(),
            Self::Integer(n) => f.debug_tuple("Integer").field(n).finish(),
            Self::Bulk(b) => f.debug_tuple("Bulk").field(&text(b)).finish(),
            Self::Nil => f.write_str("Nil"),
            Self::Array(items) => f.debug_tuple("Array").field(items).finish(),
            Self::Map(pairs) => f.debug_tuple("Map").field(pairs).finish(),
            Self::Set(items) => f.debug_tuple("Set").field(items).finish(),
            Self::Verbatim(b) => f.debug_tuple("Verbatim").field(&text(b)).finish(),
        }
    }
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Status(Cow::Borrowed("OK"));

    /// An error reply from static text such as `"ERR syntax error"`.
    pub const fn error(text: &'static str) -> Reply {
        Reply::Error(Cow::Borrowed(text.as_bytes()))
    }

    /// An `ERR` error with `text` after the code.
    pub fn err(text: impl AsRef<[u8]>) -> Reply {
        let mut line = b"ERR ".to_vec();
        line.extend_from_slice(text.as_ref());
        Reply::Error(Cow::Owned(line))
    }

    /// A bulk string copied from `bytes`.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(bytes.as_ref().to_vec())
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// At least the bytes [`encode_as`](Self::encode_as) writes, in either protocol: the
    /// payload plus [`REPLY_FRAMING`] per element, counted without encoding anything.
    pub fn max_encoded_len(&self) -> usize {
        REPLY_FRAMING
            + match self {
                Reply::Status(s) => s.len(),
                Reply::Error(e) => e.len(),
                Reply::Integer(_) | Reply::Nil => 0,
                Reply::Bulk(b) | Reply::Verbatim(b) => b.len(),
                Reply::Array(items) | Reply::Set(items) => items.iter().map(Reply::max_encoded_len).sum(),
                Reply::Map(pairs) => pairs
                    .iter()
                    .map(|(k, v)| k.max_encoded_len() + v.max_encoded_len())
                    .sum(),
            }
    }

    /// Appends the reply's RESP2 bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(RespVersion::Resp2, out);
    }

    /// Appends the reply's bytes in `protocol` to `out`.
    pub fn encode_as(&self, protocol: RespVersion, out: &mut Vec<u8>) {
        let resp3 = protocol == RespVersion::Resp3;
        match self {
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', e),
            Reply::Integer(n) => {
                out.push(b':');
                push_int(out, *n);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(b) => encode_bulk(out, b),
            Reply::Nil => out.extend_from_slice(protocol.nil()),
            Reply::Array(items) => aggregate(out, b'*', items.len(), items, protocol),
            Reply::Set(items) => {
                aggregate(out, if resp3 { b'~' } else { b'*' }, items.len(), items, protocol);
            }
            Reply::Map(pairs) => {
                let (kind, len) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                let flat = pairs.iter().flat_map(|(k, v)| [k, v]);
                aggregate(out, kind, len, flat, protocol);
            }
            Reply::Verbatim(text) if resp3 => {
                out.push(b'=');
                push_int(out, text.len() as i64 + 4);
                out.extend_from_slice(b"\r\ntxt:");
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(text) => encode_bulk(out, text),
        }
    }

    /// The reply's RESP2 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(RespVersion::Resp2)
    }

    /// The reply's bytes in `protocol`.
    pub fn to_bytes_as(&self, protocol: RespVersion) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_as(protocol, &mut out);
        out
    }
}

/// An aggregate's header (`kind`, `len`) and its elements.
fn aggregate<'a>(
    out: &mut Vec<u8>,
    kind: u8,
    len: usize,
    items: impl IntoIterator<Item = &'a Reply>,
    protocol: RespVersion,
) {
    out.push(kind);
    push_int(out, len as i64);
    out.extend_from_slice(b"\r\n");
    for item in items {
        item.encode_as(protocol, out);
    }
}

/// Writes RESP2 for [`Transport::write_frame`](crate::Transport::write_frame): a [`Reply`]
/// (owned or borrowed) as [`Reply::encode`] does, and a request (a slice of arguments) as the
/// array of bulk strings that clients send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RespEncoder;

impl Encoder<&Reply> for RespEncoder {
    type Error = std::convert::Infallible;

    fn encode(&mut self, reply: &Reply, dst: &mut Vec<u8>) -> Result<(), Self::Error> {
        reply.encode(dst);
        Ok(())
    }
}

impl Encoder<Reply> for RespEncoder {
    type Error = std::convert::Infallible;

    fn encode(&mut self, reply: Reply, dst: &mut Vec<u8>) -> Result<(), Self::Error> {
        self.encode(&reply, dst)
    }
}

impl<A: AsRef<[u8]>> Encoder<&[A]> for RespEncoder {
    type Error = std::convert::Infallible;

    fn encode(&mut self, args: &[A], dst: &mut Vec<u8>) -> Result<(), Self::Error> {
        dst.push(b'*');
        push_int(dst, args.len() as i64);
        dst.extend_from_slice(b"\r\n");
        for arg in args {
            encode_bulk(dst, arg.as_ref());
        }
        Ok(())
    }
}

/// The nil bulk string's bytes.
pub const NIL: &[u8] = b"$-1\r\n";

/// Encodes `bytes` as a bulk string (`$3\r\nabc\r\n`), as [`Reply::Bulk`] does, without
/// owning them.
pub fn encode_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_int(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A `+` or `-` line, with CR and LF mapped to spaces so that it stays one line.
fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// Why a byte stream is not RESP2 replies (see [`ReplyDecoder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A reply does not start with one of `+ - : $ *`.
    #[error("not a RESP reply: it starts with byte {0:#04x}")]
    UnknownType(u8),
    /// A length or an integer is not a decimal number, or is negative where it may not be.
    #[error("a RESP reply has a bad length or integer")]
    BadNumber,
    /// A bulk string does not end with CRLF.
    #[error("a RESP bulk string does not end with CRLF")]
    MissingCrlf,
    /// A line, a bulk string, an array, the whole reply or its nesting is beyond the limits.
    #[error("a RESP reply is larger than the decoder's limits")]
    TooLarge,
}

/// Arrays nested deeper than this are refused.
const MAX_REPLY_DEPTH: usize = 64;

/// Parses RESP2 replies, a client's side of the protocol: `+OK`, `-ERR ...`, `:1`, `$3\r\nabc`,
/// `$-1` and the null array `*-1` (both [`Reply::Nil`]), and arrays of them, nested. Requests
/// for it are [`Reply::Array`]s of [`Reply::bulk`]s, [`Reply::to_bytes`] encodes them.
/// RESP2 only: a client that switches to RESP3 (`HELLO 3`) gets replies (`%`, `~`, `_`, `=`)
/// it refuses as [`ReplyError::UnknownType`].
/// Incremental: an array's elements are taken from the buffer as they arrive, so each byte is
/// looked at about once however the reply is split (a 200,000-element reply costs what its
/// bytes do); the limits ([`RespLimits`]: a line, a bulk, a whole reply, nesting) bound what
/// it holds and waits for.
#[derive(Debug, Clone, Default)]
pub struct ReplyDecoder {
    limits: RespLimits,
    /// The arrays of the reply being read, outermost first: the elements each has, and how
    /// many more it awaits.
    open: Vec<(Vec<Reply>, usize)>,
    /// Bytes of the reply being read taken from the buffer so far (for the whole-reply limit).
    held: usize,
    /// Bytes at the front of the buffer already searched for the end of the current line.
    searched: usize,
}

/// One step of a reply: a whole element, or the header of an array whose elements follow.
enum Step {
    Element(Reply),
    Array(usize),
}

impl ReplyDecoder {
    /// A decoder with `limits`.
    pub fn new(limits: RespLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Forgets a reply partly read (for a new connection): the decoder starts afresh, its
    /// limits kept.
    pub fn reset(&mut self) {
        *self = Self::new(self.limits);
    }

    /// The step at the front of `b` and its length; `None` while incomplete.
    fn step(&mut self, b: &[u8]) -> Result<Option<(Step, usize)>, ReplyError> {
        let Some(&kind) = b.first() else {
            return Ok(None);
        };
        if !b"+-:$*".contains(&kind) {
            return Err(ReplyError::UnknownType(kind));
        }
        // The line after the type byte, up to its CRLF.
        let from = self.searched.max(1);
        let found = b
            .get(from..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"));
        let Some(end) = found.map(|p| p + from) else {
            self.searched = b.len().saturating_sub(1).max(1);
            return if b.len() > self.limits.max_inline {
                Err(ReplyError::TooLarge)
            } else {
                Ok(None)
            };
        };
        if end > self.limits.max_inline {
            return Err(ReplyError::TooLarge);
        }
        let line = &b[1..end];
        let next = end + 2;
        let number = || string2ll(line).ok_or(ReplyError::BadNumber);
        let element = match kind {
            b'+' => Reply::Status(Cow::Owned(String::from_utf8_lossy(line).into_owned())),
            b'-' => Reply::Error(Cow::Owned(line.to_vec())),
            b':' => Reply::Integer(number()?),
            b'$' => {
                let len = match number()? {
                    -1 => return Ok(Some((Step::Element(Reply::Nil), next))),
                    n => usize::try_from(n).map_err(|_| ReplyError::BadNumber)?,
                };
                if len > self.limits.max_bulk || self.held + next + len > self.limits.max_request {
                    return Err(ReplyError::TooLarge);
                }
                // The line is found: only the body is waited for.
                self.searched = end;
                let Some(body) = b.get(next..next + len + 2) else {
                    return Ok(None);
                };
                if &body[len..] != b"\r\n" {
                    return Err(ReplyError::MissingCrlf);
                }
                return Ok(Some((
                    Step::Element(Reply::Bulk(body[..len].to_vec())),
                    next + len + 2,
                )));
            }
            _ => {
                let count = match number()? {
                    -1 => return Ok(Some((Step::Element(Reply::Nil), next))),
                    n => usize::try_from(n).map_err(|_| ReplyError::BadNumber)?,
                };
                // Every element takes three bytes at least: more than the limit can hold is
                // refused before any arrives.
                if self.open.len() >= MAX_REPLY_DEPTH || count > self.limits.max_request / 3 {
                    return Err(ReplyError::TooLarge);
                }
                return Ok(Some((Step::Array(count), next)));
            }
        };
        Ok(Some((Step::Element(element), next)))
    }
}

impl Decoder for ReplyDecoder {
    type Frame = Reply;
    type Error = ReplyError;

    /// True while an array's elements are still to come.
    fn in_frame(&self) -> bool {
        !self.open.is_empty()
    }

    fn decode(&mut self, buf: &mut InBuf) -> Result<Option<Reply>, ReplyError> {
        'steps: loop {
            let Some((step, used)) = self.step(buf.as_slice())? else {
                if self.held + buf.len() > self.limits.max_request {
                    return Err(ReplyError::TooLarge);
                }
                return Ok(None);
            };
            buf.advance(used);
            self.searched = 0;
            self.held += used;
            if self.held > self.limits.max_request {
                return Err(ReplyError::TooLarge);
            }
            let mut done = match step {
                Step::Element(reply) => reply,
                Step::Array(0) => Reply::Array(Vec::new()),
                Step::Array(count) => {
                    self.open
                        .push((Vec::with_capacity(count.min(RESERVE_ARGS)), count));
                    continue;
                }
            };
            // A whole element: it completes the arrays it ends, innermost first.
            while let Some((mut items, awaited)) = self.open.pop() {
                items.push(done);
                if awaited > 1 {
                    self.open.push((items, awaited - 1));
                    continue 'steps;
                }
                done = Reply::Array(items);
            }
            self.held = 0;
            return Ok(Some(done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and collects frames until an error or the end.
    fn feed(chunks: &[&[u8]]) -> (Vec<Request>, Option<RespError>) {
        feed_with(RespLimits::default(), chunks)
    }

    fn feed_with(limits: RespLimits, chunks: &[&[u8]]) -> (Vec<Request>, Option<RespError>) {
        let mut d = RespDecoder::new(limits);
        let mut buf = InBuf::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend(chunk);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn req(args: &[&str]) -> Request {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn resp3_kinds_and_their_resp2_forms() {
        let b = |t: &str| Reply::bulk(t);
        let map = Reply::Map(vec![(b("a"), Reply::Integer(1)), (b("b"), Reply::Nil)]);
        assert_eq!(
            map.to_bytes_as(RespVersion::Resp3),
            b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n"
        );
        assert_eq!(map.to_bytes(), b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n");
        let set = Reply::Set(vec![Reply::Status("fast".into())]);
        assert_eq!(set.to_bytes_as(RespVersion::Resp3), b"~1\r\n+fast\r\n");
        assert_eq!(set.to_bytes(), b"*1\r\n+fast\r\n");
        let text = Reply::Verbatim(b"# Keyspace\r\n".to_vec());
        assert_eq!(
            text.to_bytes_as(RespVersion::Resp3),
            b"=16\r\ntxt:# Keyspace\r\n\r\n"
        );
        assert_eq!(text.to_bytes(), b"$12\r\n# Keyspace\r\n\r\n");
        let nested = Reply::Array(vec![Reply::Nil, Reply::Array(vec![Reply::Nil])]);
        assert_eq!(nested.to_bytes_as(RespVersion::Resp3), b"*2\r\n_\r\n*1\r\n_\r\n");
        assert_eq!(RespVersion::Resp3.version(), 3);
        assert_eq!(RespVersion::default(), RespVersion::Resp2);
    }

    #[test]
    fn max_encoded_len_bounds_both_protocols() {
        let b = |t: &str| Reply::bulk(t);
        for reply in [
            Reply::OK,
            Reply::err("wrong"),
            Reply::Integer(i64::MIN),
            Reply::Nil,
            Reply::Bulk(vec![b'x'; 1000]),
            Reply::Verbatim(b"# Keyspace\r\n".to_vec()),
            Reply::Array(vec![
                b("a"),
                Reply::Integer(-1),
                Reply::Array(vec![Reply::Nil; 3]),
            ]),
            Reply::Set(vec![Reply::Integer(i64::MAX); 4]),
            Reply::Map(vec![(b("key"), Reply::Bulk(vec![b'v'; 300]))]),
        ] {
            let bound = reply.max_encoded_len();
            for protocol in [RespVersion::Resp2, RespVersion::Resp3] {
                let len = reply.to_bytes_as(protocol).len();
                assert!(len <= bound, "{reply:?} in {protocol:?}: {len} > {bound}");
            }
        }
    }

    #[test]
    fn string2ll_is_strict() {
        for (s, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("18446744073709551616", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1a", None),
            ("00000000000000000000001", None),
        ] {
            assert_eq!(string2ll(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn multibulk_and_inline_requests() {
        let (got, err) = feed(&[b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset a  b\n*1\r\n$0\r\n\r\n"]);
        assert_eq!(err, None);
        assert_eq!(
            got,
            vec![
                req(&["GET", "k"]),
                req(&["PING"]),
                req(&["set", "a", "b"]),
                req(&[""])
            ]
        );
    }

    #[test]
    fn empty_requests_are_skipped() {
        let (got, err) = feed(&[b"*0\r\n*-1\r\n*-99\r\n\r\n \r\n\nPING\r\n"]);
        assert_eq!((got, err), (vec![req(&["PING"])], None));
    }

    #[test]
    fn every_split_gives_the_same_frames() {
        let input: &[u8] =
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\nECHO \"a b\" 'c'\r\n*1\r\n$4\r\nPING\r\n";
        let (whole, err) = feed(&[input]);
        assert_eq!(err, None);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0][2], b"va\r\nl");
        for step in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(step).collect();
            assert_eq!(feed(&chunks), (whole.clone(), None), "step {step}");
        }
    }

    #[test]
    fn protocol_errors_as_redis_words_them() {
        let cases: &[(&[u8], RespError, &[u8])] = &[
            (
                b"*abc\r\n",
                RespError::InvalidMultibulkLength,
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*2147483648\r\n",
                RespError::InvalidMultibulkLength,
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*01\r\n",
                RespError::InvalidMultibulkLength,
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*1\r\n$abc\r\n",
                RespError::InvalidBulkLength,
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n$-1\r\n",
                RespError::InvalidBulkLength,
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n$536870913\r\n",
                RespError::InvalidBulkLength,
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\nx\r\n",
                RespError::ExpectedDollar(b'x'),
                b"-ERR Protocol error: expected '$', got 'x'\r\n",
            ),
            (
                b"*1\r\n\r\n",
                RespError::ExpectedDollar(b' '),
                b"-ERR Protocol error: expected '$', got ' '\r\n",
            ),
            (
                b"\"abc\r\n",
                RespError::UnbalancedQuotes,
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
            (
                b"set a \"b\"c\r\n",
                RespError::UnbalancedQuotes,
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
        ];
        for (input, want, text) in cases {
            let (_, err) = feed(&[input]);
            assert_eq!(err, Some(*want), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(want.reply().unwrap(), *text);
        }
        assert_eq!(RespError::RequestTooLarge.reply(), None);
        assert_eq!(
            RespError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn requests_before_an_error_are_delivered() {
        let (got, err) = feed(&[b"*1\r\n$4\r\nPING\r\n*x\r\n"]);
        assert_eq!(got, vec![req(&["PING"])]);
        assert_eq!(err, Some(RespError::InvalidMultibulkLength));
    }

    #[test]
    fn redis_quirks() {
        // The two bytes after a bulk are skipped unread.
        let (got, _) = feed(&[b"*1\r\n$1\r\nab\r\nPING\r\n"]);
        assert_eq!(got, vec![req(&["a"]), req(&["PING"])]);
        // Any byte may follow the CR of a count line.
        let (got, _) = feed(&[b"*1\rX$4\rXPING\r\n"]);
        assert_eq!(got, vec![req(&["PING"])]);
        // A NUL before the end keeps a line open.
        assert_eq!(feed(&[b"PING\0\n"]), (vec![], None));
        assert_eq!(feed(&[b"*1\r\n\0\r\n"]), (vec![], None));
        // An LF-only inline request; an LF-only multibulk waits for a CR.
        assert_eq!(feed(&[b"PING\n"]).0, vec![req(&["PING"])]);
        assert_eq!(feed(&[b"*1\n$4\nPING\n"]), (vec![], None));
        // A bulk of exactly the limit is accepted (and waited for).
        assert_eq!(feed(&[b"*1\r\n$536870912\r\n"]), (vec![], None));
        // A huge count allocates nothing up front.
        assert_eq!(feed(&[b"*2147483647\r\n$1\r\na\r\n"]), (vec![], None));
    }

    #[test]
    fn limits_without_allocating() {
        let small = RespLimits {
            max_bulk: 100,
            max_inline: 16,
            max_request: 200,
        };
        assert_eq!(feed_with(small, &[&[b'a'; 18]]).1, Some(RespError::TooBigInline));
        assert_eq!(feed_with(small, &[&[b'a'; 17]]).1, None, "may end with the CR");
        assert_eq!(feed_with(small, &[&[b'a'; 16], b"\r\n"]).1, None);
        assert_eq!(
            feed_with(small, &[&[b'a'; 17], b"\n"]).1,
            Some(RespError::TooBigInline)
        );
        let long_count = [b"*".as_slice(), &[b'1'; 17]].concat();
        assert_eq!(
            feed_with(small, &[&long_count]).1,
            Some(RespError::TooBigMbulkCount)
        );
        // Refused the same whether the line's end arrived with it or not.
        let ended = [long_count.as_slice(), b"\r\n"].concat();
        assert_eq!(feed_with(small, &[&ended]).1, Some(RespError::TooBigMbulkCount));
        let long_len = [b"*1\r\n$".as_slice(), &[b'1'; 17]].concat();
        assert_eq!(feed_with(small, &[&long_len]).1, Some(RespError::TooBigBulkCount));
        assert_eq!(
            feed_with(small, &[b"*1\r\n$101\r\n"]).1,
            Some(RespError::InvalidBulkLength)
        );
        // 100 + 32 fits, twice does not.
        let two = b"*2\r\n$100\r\n";
        assert_eq!(feed_with(small, &[two]).1, None);
        let mut both = two.to_vec();
        both.extend_from_slice(&[b'x'; 100]);
        both.extend_from_slice(b"\r\n$100\r\n");
        assert_eq!(feed_with(small, &[&both]).1, Some(RespError::RequestTooLarge));
        // Many empty arguments count too.
        let empties = [b"*100\r\n".as_slice(), &b"$0\r\n\r\n".repeat(10)].concat();
        assert_eq!(feed_with(small, &[&empties]).1, Some(RespError::RequestTooLarge));
    }

    #[test]
    fn a_line_fed_byte_by_byte_is_searched_once() {
        let mut d = RespDecoder::default();
        let mut buf = InBuf::new();
        for _ in 0..1000 {
            buf.extend(b"a");
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert_eq!(d.searched, buf.len());
        }
        buf.extend(b"\r\n");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap()[0].len(), 1000);
    }

    #[test]
    fn split_args_as_sdssplitargs() {
        let split = |s: &[u8]| {
            split_args(s).map(|v| {
                v.into_iter()
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            split(b"  set a  b "),
            Some(vec!["set".into(), "a".into(), "b".into()])
        );
        assert_eq!(
            split(b"echo \"\\x41\\n\""),
            Some(vec!["echo".into(), "A\n".into()])
        );
        assert_eq!(split(b"echo 'it\\'s'"), Some(vec!["echo".into(), "it's".into()]));
        assert_eq!(
            split(b"set a x\"b c\""),
            Some(vec!["set".into(), "a".into(), "xb c".into()])
        );
        assert_eq!(split(b"echo\x0ba"), Some(vec!["echo\x0ba".into()]));
        assert_eq!(split(b"\x0becho a"), Some(vec!["echo".into(), "a".into()]));
        assert_eq!(split(b"echo \"\""), Some(vec!["echo".into(), "".into()]));
        assert_eq!(split(b"get a\0b"), Some(vec!["get".into(), "a".into()]));
        assert_eq!(split(b""), Some(vec![]));
        assert_eq!(split(b"\"abc"), None);
        assert_eq!(split(b"'abc"), None);
        assert_eq!(split(b"\"a\"b"), None);
        assert_eq!(split(b"'a'b"), None);
    }

    #[test]
    fn replies_encode_byte_exact() {
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::OK, b"+OK\r\n"),
            (Reply::error("ERR syntax error"), b"-ERR syntax error\r\n"),
            (
                Reply::err("unknown command 'a\r\nb'"),
                b"-ERR unknown command 'a  b'\r\n",
            ),
            (Reply::Integer(0), b":0\r\n"),
            (Reply::Integer(-42), b":-42\r\n"),
            (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (Reply::bulk(""), b"$0\r\n\r\n"),
            (Reply::bulk("a\r\nb"), b"$4\r\na\r\nb\r\n"),
            (Reply::Nil, b"$-1\r\n"),
            (Reply::Array(vec![]), b"*0\r\n"),
            (
                Reply::Array(vec![Reply::Integer(1), Reply::Array(vec![Reply::Nil])]),
                b"*2\r\n:1\r\n*1\r\n$-1\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(reply.to_bytes(), want, "{reply:?}");
        }
    }

    #[test]
    fn requests_encode_as_redis_clients_send_them_and_parse_back() {
        let mut out = Vec::new();
        let Ok(()) = RespEncoder.encode(["SET", "k", "a\r\nb"].as_slice(), &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        let Ok(()) = RespEncoder.encode(&Reply::OK, &mut out);
        let mut buf = InBuf::borrowed(&out);
        let want: Vec<Vec<u8>> = vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\nb".to_vec()];
        assert_eq!(RespDecoder::default().decode(&mut buf), Ok(Some(want)));
        assert_eq!(ReplyDecoder::default().decode(&mut buf), Ok(Some(Reply::OK)));
    }

    #[test]
    fn replies_decode_whatever_the_split() {
        let replies = vec![
            Reply::OK,
            Reply::error("ERR unknown command"),
            Reply::Integer(-42),
            Reply::bulk("hello\r\nworld"),
            Reply::bulk(""),
            Reply::Nil,
            Reply::Array(vec![
                Reply::bulk("a"),
                Reply::Array(vec![Reply::Integer(1), Reply::Nil]),
            ]),
            Reply::Array(vec![]),
        ];
        let mut stream = Vec::new();
        for r in &replies {
            r.encode(&mut stream);
        }
        stream.extend_from_slice(b"*-1\r\n");
        let mut want = replies.clone();
        want.push(Reply::Nil);
        for split in 1..stream.len() {
            let mut decoder = ReplyDecoder::default();
            let mut got = Vec::new();
            let mut held = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                held.extend_from_slice(chunk);
                let mut buf = InBuf::borrowed(&held);
                while let Some(r) = decoder.decode(&mut buf).unwrap() {
                    got.push(r);
                }
                let rest = buf.as_slice().to_vec();
                held = rest;
            }
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn replies_debug_as_text() {
        let r = Reply::Array(vec![Reply::err("no\r\n"), Reply::bulk(b"a\x00\xff"), Reply::Nil]);
        assert_eq!(
            format!("{r:?}"),
            r#"Array([Error("ERR no\\r\\n"), Bulk("a\\x00\\xff"), Nil])"#
        );
    }

    #[test]
    fn a_large_array_is_taken_as_it_arrives() {
        // 100,000 elements, fed 4 KiB at a time: what stays buffered is at most a chunk and a
        // part of one element (an array read again from its start would keep all of it).
        let items: Vec<Reply> = (0..100_000).map(|i| Reply::bulk(format!("item:{i}"))).collect();
        let stream = Reply::Array(items.clone()).to_bytes();
        let mut decoder = ReplyDecoder::default();
        let mut held = Vec::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(4096) {
            held.extend_from_slice(chunk);
            let mut buf = InBuf::borrowed(&held);
            if let Some(r) = decoder.decode(&mut buf).unwrap() {
                got.push(r);
            }
            held = buf.as_slice().to_vec();
            assert!(held.len() < 4096 + 32, "{} bytes held", held.len());
            assert_eq!(decoder.in_frame(), got.is_empty());
        }
        assert_eq!(got, [Reply::Array(items)]);
        // Byte by byte, a nested reply too.
        let nested = Reply::Array(vec![
            Reply::Array(vec![Reply::Nil, Reply::bulk("a\r\n")]),
            Reply::Integer(7),
        ]);
        let bytes = nested.to_bytes();
        let mut held = Vec::new();
        let mut got = None;
        for b in &bytes {
            held.push(*b);
            let mut buf = InBuf::borrowed(&held);
            got = decoder.decode(&mut buf).unwrap().or(got);
            held = buf.as_slice().to_vec();
        }
        assert_eq!((got, held.len()), (Some(nested), 0));
    }

    #[test]
    fn bad_replies_are_errors_and_limits_hold_before_the_bytes_arrive() {
        let decode =
            |bytes: &[u8], limits: RespLimits| ReplyDecoder::new(limits).decode(&mut InBuf::borrowed(bytes));
        let small = RespLimits {
            max_bulk: 16,
            max_inline: 32,
            max_request: 64,
        };
        let d = RespLimits::default();
        assert_eq!(decode(b"GET k\r\n", d), Err(ReplyError::UnknownType(b'G')));
        assert_eq!(decode(b":12x\r\n", d), Err(ReplyError::BadNumber));
        assert_eq!(decode(b"$-2\r\n", d), Err(ReplyError::BadNumber));
        assert_eq!(decode(b"$2\r\nabcd\r\n", d), Err(ReplyError::MissingCrlf));
        assert_eq!(decode(b"$17\r\n", small), Err(ReplyError::TooLarge));
        assert_eq!(decode(b"*22\r\n", small), Err(ReplyError::TooLarge));
        assert_eq!(decode(&[b'+'; 40], small), Err(ReplyError::TooLarge));
        assert_eq!(decode(&b"*1\r\n".repeat(70), d), Err(ReplyError::TooLarge));
        assert_eq!(decode(b"$5\r\nab", d), Ok(None));
        assert_eq!(decode(b"\r\n", d), Err(ReplyError::UnknownType(b'\r')));
        // The whole reply's limit holds across elements taken from the buffer.
        let mut many = b"*20\r\n".to_vec();
        many.extend(b"$5\r\nabcde\r\n".repeat(6));
        assert_eq!(decode(&many, small), Err(ReplyError::TooLarge));
    }
}
