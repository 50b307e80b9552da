//! Message heads, parsed with httparse, and what they say about the connection and the
//! body (its framing, keep-alive, `Expect: 100-continue`). The one parser of request heads
//! ([`RequestDecoder`](super::RequestDecoder) and the built-in `weft serve --proto http`
//! read heads with it) and the one parser of response heads
//! ([`ResponseDecoder`](super::ResponseDecoder) and `weft load`).

use std::mem::MaybeUninit;

use super::error::{BadRequest, BadResponse, HttpError};
use super::limits::HttpLimits;
use super::request::Version;

/// Header slots a parse has: [`HttpLimits::max_headers`] is capped at this many.
pub(crate) const HEADER_SLOTS: usize = 128;

/// Header slots for one parse, left uninitialized: httparse writes the headers it finds, so a
/// parse does not first clear all the slots.
type Slots<'h> = [MaybeUninit<httparse::Header<'h>>; HEADER_SLOTS];

/// Fresh slots for one parse.
#[inline]
const fn slots<'h>() -> Slots<'h> {
    [const { MaybeUninit::uninit() }; HEADER_SLOTS]
}

/// The first `limits.max_headers` of `slots`: a head with more is over the limits.
#[inline]
fn within<'s, 'h>(
    slots: &'s mut Slots<'h>,
    limits: &HttpLimits,
) -> &'s mut [MaybeUninit<httparse::Header<'h>>] {
    slots
        .get_mut(..limits.max_headers.min(HEADER_SLOTS))
        .unwrap_or_default()
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` bytes (0 without the header).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head, borrowing the bytes it was parsed from.
#[derive(Debug)]
pub(crate) struct Head<'h, 'b> {
    /// The method token.
    pub(crate) method: &'b str,
    /// The request target, as sent.
    pub(crate) path: &'b str,
    pub(crate) version: Version,
    pub(crate) headers: &'h [httparse::Header<'b>],
    pub(crate) framing: Framing,
    /// The connection may stay open after the response.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub(crate) expect_continue: bool,
}

/// Parses the request head at the front of `input` and hands it to `f`: `Ok(None)` while it
/// is incomplete and within `limits`, else what `f` made of it and the head's length.
///
/// # Errors
///
/// The head is malformed, over the limits, of another HTTP version, has no `Host` (HTTP/1.1)
/// or two, or frames its body ambiguously (both `Content-Length` and `Transfer-Encoding`, two `Content-Length`s, a
/// transfer coding other than chunked) or over `limits.max_body`.
pub(crate) fn parse_head<R>(
    input: &[u8],
    limits: &HttpLimits,
    f: impl FnOnce(Head<'_, '_>) -> R,
) -> Result<Option<(R, usize)>, HttpError> {
    let too_large = HttpError::HeadTooLarge {
        max_head: limits.max_head,
        max_headers: limits.max_headers,
    };
    let mut slots = slots();
    let slots = within(&mut slots, limits);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(input, slots) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => Err(too_large),
        Ok(httparse::Status::Complete(len)) => {
            let version = if req.version == Some(0) {
                Version::Http10
            } else {
                Version::Http11
            };
            let headers: &[httparse::Header<'_>] = req.headers;
            let named = Named::of(headers, version);
            named.check_host(version)?;
            let framing = framing(headers, &named, version, limits)?;
            let head = Head {
                method: req.method.unwrap_or_default(),
                path: req.path.unwrap_or_default(),
                version,
                headers,
                framing,
                keep_alive: named.keep_alive,
                expect_continue: version == Version::Http11 && named.expect_continue,
            };
            Ok(Some((f(head), len)))
        }
        Ok(httparse::Status::Partial) if input.len() > limits.max_head => Err(too_large),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::Version) => match version_error(input) {
            Some(e) => Err(e),
            None if input.len() > limits.max_head => Err(too_large),
            None => Ok(None),
        },
        Err(httparse::Error::TooManyHeaders) => Err(too_large),
        Err(httparse::Error::HeaderName) if is_folded(input) => Err(BadRequest::ObsFold.into()),
        Err(_) => Err(BadRequest::Syntax.into()),
    }
}

/// The values of the headers named `name` (ASCII case-insensitive), in order.
pub(crate) fn values<'a>(
    headers: &'a [httparse::Header<'_>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether the connection may stay open after the response, from the version and the
/// `Connection` values: HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive` (the last
/// such token wins).
pub(crate) fn keep_alive<'v>(version: Version, connection: impl Iterator<Item = &'v [u8]>) -> bool {
    let mut keep = version == Version::Http11;
    for value in connection {
        connection_tokens(&mut keep, value);
    }
    keep
}

/// Applies one `Connection` value's `close` and `keep-alive` tokens to `keep`.
fn connection_tokens(keep: &mut bool, value: &[u8]) {
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            *keep = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            *keep = true;
        }
    }
}

/// What a request's headers say about the request, gathered in one pass over them.
#[derive(Debug, Default)]
struct Named<'b> {
    /// `Host` headers (counted up to 2).
    hosts: u8,
    /// The first `Content-Length` value, and whether another followed.
    length: Option<&'b [u8]>,
    lengths: u8,
    /// A `Transfer-Encoding` header is present.
    coded: bool,
    /// The connection may stay open (the version's default, then `Connection` tokens).
    keep_alive: bool,
    /// `Expect: 100-continue`.
    expect_continue: bool,
}

impl<'b> Named<'b> {
    fn of(headers: &[httparse::Header<'b>], version: Version) -> Self {
        let mut n = Self {
            keep_alive: version == Version::Http11,
            ..Self::default()
        };
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") {
                n.hosts = n.hosts.saturating_add(1);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                n.length = n.length.or(Some(h.value));
                n.lengths = n.lengths.saturating_add(1);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                n.coded = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                connection_tokens(&mut n.keep_alive, h.value);
            } else if name.eq_ignore_ascii_case(b"expect") {
                n.expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
        }
        n
    }

    /// RFC 9112, 3.2: an HTTP/1.1 request has exactly one `Host`, any request at most one.
    fn check_host(&self, version: Version) -> Result<(), HttpError> {
        match self.hosts {
            0 if version == Version::Http11 => Err(BadRequest::MissingHost.into()),
            0 | 1 => Ok(()),
            _ => Err(BadRequest::DuplicateHost.into()),
        }
    }
}

/// How the body is framed, refusing what could be read two ways.
fn framing(
    headers: &[httparse::Header<'_>],
    named: &Named<'_>,
    version: Version,
    limits: &HttpLimits,
) -> Result<Framing, HttpError> {
    let length = match (named.length, named.lengths) {
        (None, _) => None,
        (Some(v), 1) => Some(content_length(v).ok_or(BadRequest::InvalidContentLength)?),
        (Some(_), _) => return Err(BadRequest::DuplicateContentLength.into()),
    };
    let mut codings = values(headers, "transfer-encoding")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .peekable();
    if !named.coded || codings.peek().is_none() {
        let length = length.unwrap_or(0);
        if length > limits.max_body {
            return Err(HttpError::BodyTooLarge {
                max_body: limits.max_body,
            });
        }
        return Ok(Framing::Length(length));
    }
    if length.is_some() {
        return Err(BadRequest::ContentLengthWithTransferEncoding.into());
    }
    if version == Version::Http10 {
        return Err(BadRequest::TransferEncodingInHttp10.into());
    }
    match transfer_codings(codings) {
        Codings::Chunked { alone: true } => Ok(Framing::Chunked),
        Codings::ChunkedTwice => Err(BadRequest::ChunkedTwice.into()),
        Codings::NotChunked => Err(BadRequest::ChunkedNotFinal.into()),
        Codings::Chunked { alone: false } => Err(HttpError::UnsupportedTransferEncoding),
    }
}

/// What a list of transfer codings (at least one) says about the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codings {
    /// `chunked` last and once; `alone` when it is the only coding.
    Chunked { alone: bool },
    /// `chunked` more than once, which a sender must not do.
    ChunkedTwice,
    /// The last coding is not `chunked`.
    NotChunked,
}

/// Sorts out the transfer codings `codings`, in order (trimmed, at least one).
fn transfer_codings<'v>(codings: impl Iterator<Item = &'v [u8]>) -> Codings {
    let (mut count, mut chunked, mut last_chunked) = (0, 0, false);
    for coding in codings {
        count += 1;
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_chunked);
    }
    match (chunked, last_chunked) {
        (2.., _) => Codings::ChunkedTwice,
        (_, false) => Codings::NotChunked,
        _ => Codings::Chunked { alone: count == 1 },
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no list), within `u64`.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// How a response body is framed (RFC 9112, 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// `Content-Length` bytes; 0 for a response that has no body (1xx, 204, 304, an answer
    /// to `HEAD`, a 2xx to `CONNECT`).
    Length(u64),
    /// `Transfer-Encoding` ending with `chunked`.
    Chunked,
    /// Neither: the body runs to the connection's close.
    UntilClose,
}

/// What the request a response answers was, as far as the response's framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Asked {
    /// `HEAD`: the response has no body, whatever its headers say.
    Head,
    /// `CONNECT`: a 2xx response has no body, and the connection becomes a tunnel.
    Connect,
    /// Any other method.
    #[default]
    Other,
}

impl Asked {
    /// A response with `status` to this request ends HTTP on the connection: `101
    /// Switching Protocols`, or a 2xx to `CONNECT` (a tunnel); neither has a body.
    pub(crate) fn switches(self, status: u16) -> bool {
        status == 101 || (self == Asked::Connect && (200..300).contains(&status))
    }
}

/// A parsed response head, borrowing the bytes it was parsed from.
#[derive(Debug)]
pub(crate) struct ResponseHead<'h, 'b> {
    pub(crate) version: Version,
    pub(crate) status: u16,
    pub(crate) reason: &'b str,
    pub(crate) headers: &'h [httparse::Header<'b>],
    pub(crate) framing: ResponseFraming,
    /// The server lets the connection stay open after this response: from the version and
    /// `Connection`, and false when the body runs to the close or `Transfer-Encoding` came
    /// in an HTTP/1.0 response.
    pub(crate) keep_alive: bool,
}

impl ResponseHead<'_, '_> {
    /// An interim (1xx) response other than `101 Switching Protocols`: the final one is still
    /// to come.
    pub(crate) fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses the response head at the front of `input`, the answer to a request `asked`, and
/// hands it to `f`: `Ok(None)` while it is incomplete and within `limits`, else what `f`
/// made of it and the head's length.
///
/// # Errors
///
/// The head is malformed, not HTTP/1.0 or 1.1, over the limits, or frames its body
/// ambiguously (`Content-Length`s that disagree or with `Transfer-Encoding`, `chunked`
/// twice) or, by `Content-Length`, over `limits.max_body`.
pub(crate) fn parse_response_head<R>(
    input: &[u8],
    limits: &HttpLimits,
    asked: Asked,
    f: impl FnOnce(ResponseHead<'_, '_>) -> R,
) -> Result<Option<(R, usize)>, BadResponse> {
    let too_large = BadResponse::HeadTooLarge {
        max_head: limits.max_head,
        max_headers: limits.max_headers,
    };
    let mut slots = slots();
    let slots = within(&mut slots, limits);
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, input, slots);
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => Err(too_large),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or_default();
            if status < 100 {
                return Err(BadResponse::Syntax);
            }
            let version = if resp.version == Some(0) {
                Version::Http10
            } else {
                Version::Http11
            };
            let headers: &[httparse::Header<'_>] = resp.headers;
            let (framing, keep_alive) = response_framing(headers, version, status, asked, limits)?;
            let head = ResponseHead {
                version,
                status,
                reason: resp.reason.unwrap_or_default(),
                headers,
                framing,
                keep_alive,
            };
            Ok(Some((f(head), len)))
        }
        Ok(httparse::Status::Partial) if input.len() > limits.max_head => Err(too_large),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(too_large),
        Err(_) => Err(BadResponse::Syntax),
    }
}

/// How a response's body is framed (RFC 9112, 6.3), and whether the connection stays open
/// after it; in one pass over the headers.
fn response_framing(
    headers: &[httparse::Header<'_>],
    version: Version,
    status: u16,
    asked: Asked,
    limits: &HttpLimits,
) -> Result<(ResponseFraming, bool), BadResponse> {
    let mut keep = version == Version::Http11;
    let mut length: Option<u64> = None;
    let mut coded = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9110, 8.6: the same length repeated (in fields or a list) is that length.
            for value in h.value.split(|&b| b == b',') {
                let n = content_length(value).ok_or(BadResponse::InvalidContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(BadResponse::ConflictingContentLength);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_tokens(&mut keep, h.value);
        }
    }
    let bodiless =
        asked == Asked::Head || asked.switches(status) || status < 200 || status == 204 || status == 304;
    if bodiless {
        return Ok((ResponseFraming::Length(0), keep));
    }
    if coded {
        if length.is_some() {
            return Err(BadResponse::ContentLengthWithTransferEncoding);
        }
        let codings = values(headers, "transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        // RFC 9112, 6.1: Transfer-Encoding in an HTTP/1.0 message is read, then the
        // connection closed.
        let keep = keep && version == Version::Http11;
        return match transfer_codings(codings) {
            Codings::Chunked { .. } => Ok((ResponseFraming::Chunked, keep)),
            Codings::ChunkedTwice => Err(BadResponse::ChunkedTwice),
            Codings::NotChunked => Ok((ResponseFraming::UntilClose, false)),
        };
    }
    match length {
        Some(n) if n > limits.max_body => Err(BadResponse::BodyTooLarge {
            max_body: limits.max_body,
        }),
        Some(n) => Ok((ResponseFraming::Length(n), keep)),
        None => Ok((ResponseFraming::UntilClose, false)),
    }
}

/// True when the first thing wrong with a head httparse refused is a header line that
/// starts with a space or a tab: a folded continuation (obs-fold). Only the head up to that
/// line is looked at, so that the answer does not depend on what follows it or on where the
/// bytes were split.
fn is_folded(input: &[u8]) -> bool {
    let starts_line = |w: &[u8]| w.first() == Some(&b'\n');
    let Some(at) = input
        .windows(2)
        .position(|w| starts_line(w) && matches!(w.get(1), Some(b' ' | b'\t')))
    else {
        return false;
    };
    let before = input.get(..=at).unwrap_or_default();
    // Everything before the folded line parses, and the head has not ended before it.
    let mut slots = slots();
    let mut req = httparse::Request::new(&mut []);
    matches!(
        req.parse_with_uninit_headers(before, &mut slots),
        Ok(httparse::Status::Partial)
    )
}

/// The answer to a request line whose version httparse refused: 505 for a well-formed
/// `HTTP/x.y` other than 1.0 and 1.1, 400 for garbage, and `None` while the line is
/// incomplete and its version may still become `HTTP/x.y` (so that the answer does not
/// depend on where the bytes were split).
fn version_error(input: &[u8]) -> Option<HttpError> {
    let (line, complete) = match input.iter().position(|&b| b == b'\n') {
        Some(end) => (input.get(..end).unwrap_or_default(), true),
        None => (input, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.split(|&b| b == b' ').nth(2).unwrap_or_default();
    let fits = version.len() <= 8
        && version.iter().zip(b"HTTP/0.0").all(|(&b, &pattern)| {
            if pattern == b'0' {
                b.is_ascii_digit()
            } else {
                b == pattern
            }
        });
    match (complete, fits) {
        (true, true) if version.len() == 8 => Some(HttpError::UnsupportedVersion),
        (false, true) => None,
        _ => Some(BadRequest::Syntax.into()),
    }
}
