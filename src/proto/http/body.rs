//! A message body read as it arrives: `Content-Length` bytes, chunks (their extensions and
//! the trailers skipped), or, for a response, everything up to the connection's end. Each
//! byte is looked at once, however the body is split. The one chunked parser: requests
//! ([`RequestDecoder`](super::RequestDecoder), `weft serve --proto http`) and responses
//! ([`ResponseDecoder`](super::ResponseDecoder), `weft load`) are read with it.

use super::head::Framing;
use super::limits::HttpLimits;
use crate::proto::codec::InBuf;

/// Why a body cannot be read; each decoder says it in its own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// A chunk-size line, chunk end or trailer line is malformed.
    InvalidChunk,
    /// The chunks, or the bytes up to the connection's end, passed `max_body`.
    TooLarge,
    /// The trailer section passed `max_head`.
    TrailersTooLarge,
}

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Where a body's data goes.
pub(crate) trait Sink {
    /// Takes the next bytes of the body.
    fn put(&mut self, data: &[u8]);
}

/// Keeps the body.
impl Sink for Vec<u8> {
    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }
}

/// Drops the body, counting its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) u64);

impl Sink for Count {
    fn put(&mut self, data: &[u8]) {
        self.0 += data.len() as u64;
    }
}

/// Where a body is in its reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyReader {
    /// `left` bytes of a `Content-Length` body to come.
    Length { left: u64 },
    /// A chunked body, `total` bytes of data read so far.
    Chunked { at: Chunk, total: u64 },
    /// A response body that ends with the connection, `total` bytes of it read so far.
    UntilClose { total: u64 },
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Waiting for a chunk-size line.
    Size,
    /// `left` bytes of a chunk's data to come.
    Data { left: u64 },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section, `used` bytes of it read.
    Trailers { used: usize },
}

impl BodyReader {
    /// The reader of a body framed as `framing`.
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Length(left) => Self::Length { left },
            Framing::Chunked => Self::Chunked {
                at: Chunk::Size,
                total: 0,
            },
        }
    }

    /// The reader of a response body delimited by the connection's close.
    pub(crate) fn until_close() -> Self {
        Self::UntilClose { total: 0 }
    }

    /// True when the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Self::Length { left: 0 })
    }

    /// Reads what `buf` holds of the body, giving its data to `out`. Returns true once the
    /// body is complete; what follows it stays in `buf`.
    ///
    /// # Errors
    ///
    /// A malformed chunked body, chunks (or bytes until the close) over `limits.max_body`
    /// or trailers over `limits.max_head`.
    pub(crate) fn read(
        &mut self,
        buf: &mut InBuf<'_>,
        out: &mut impl Sink,
        limits: &HttpLimits,
    ) -> Result<bool, BodyError> {
        loop {
            match self {
                Self::Length { left } => {
                    data(buf, left, out);
                    return Ok(*left == 0);
                }
                Self::UntilClose { total } => {
                    *total = total.saturating_add(buf.len() as u64);
                    if *total > limits.max_body {
                        return Err(BodyError::TooLarge);
                    }
                    let mut left = buf.len() as u64;
                    data(buf, &mut left, out);
                    return Ok(false);
                }
                Self::Chunked { at, total } => match *at {
                    Chunk::Size => {
                        let Some(line) = line(buf, MAX_CHUNK_LINE, BodyError::InvalidChunk)? else {
                            return Ok(false);
                        };
                        let size = chunk_size(buf.as_slice().get(..line).unwrap_or_default())?;
                        buf.advance(line + 2);
                        *total = total.saturating_add(size);
                        if *total > limits.max_body {
                            return Err(BodyError::TooLarge);
                        }
                        *at = if size == 0 {
                            Chunk::Trailers { used: 0 }
                        } else {
                            Chunk::Data { left: size }
                        };
                    }
                    Chunk::Data { mut left } => {
                        data(buf, &mut left, out);
                        *at = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data { left }
                        };
                        if left > 0 {
                            return Ok(false);
                        }
                    }
                    Chunk::DataEnd => match buf.as_slice() {
                        [b'\r', b'\n', ..] => {
                            buf.advance(2);
                            *at = Chunk::Size;
                        }
                        [] | [b'\r'] => return Ok(false),
                        _ => return Err(BodyError::InvalidChunk),
                    },
                    Chunk::Trailers { used } => {
                        let room = limits.max_head.saturating_sub(used);
                        let Some(line) = line(buf, room, BodyError::TrailersTooLarge)? else {
                            return Ok(false);
                        };
                        buf.advance(line + 2);
                        if line == 0 {
                            *self = Self::Length { left: 0 };
                            return Ok(true);
                        }
                        *at = Chunk::Trailers {
                            used: used + line + 2,
                        };
                    }
                },
            }
        }
    }
}

/// Moves up to `left` bytes from `buf` to `out`.
fn data(buf: &mut InBuf<'_>, left: &mut u64, out: &mut impl Sink) {
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
    out.put(buf.as_slice().get(..n).unwrap_or_default());
    buf.advance(n);
    *left -= n as u64;
}

/// The length of the CRLF-ended line at the front of `buf` (without its CRLF), `None` while
/// it is incomplete; `too_long` once it is longer than `max` bytes with its CRLF; a bare LF
/// or CR is [`BodyError::InvalidChunk`].
fn line(buf: &InBuf<'_>, max: usize, too_long: BodyError) -> Result<Option<usize>, BodyError> {
    let bytes = buf.as_slice();
    let searched = bytes.get(..max.min(bytes.len())).unwrap_or_default();
    match searched.iter().position(|&b| b == b'\n') {
        Some(end) => match end.checked_sub(1).and_then(|cr| bytes.get(cr)) {
            Some(b'\r') if !bytes.get(..end - 1).unwrap_or_default().contains(&b'\r') => Ok(Some(end - 1)),
            _ => Err(BodyError::InvalidChunk),
        },
        None if bytes.len() >= max => Err(too_long),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and extensions
/// (`;name=value`, skipped).
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (size, rest) = line.split_at(digits);
    if size.is_empty() || size.len() > 16 {
        return Err(BodyError::InvalidChunk);
    }
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest.first() == Some(&b';'))
        || rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(BodyError::InvalidChunk);
    }
    let size = size.iter().fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(digit)
    });
    Ok(size)
}
