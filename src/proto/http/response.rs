//! A response and its encoder: status line, `Date`, headers, `Content-Length`, body.

use std::borrow::Cow;
use std::io::Write;

use super::date::DateCache;
use super::request::{Method, Request, Version};
use crate::proto::codec::Encoder;

/// The interim answer to `Expect: 100-continue`, to write as it is (see
/// [`RequestDecoder::expects_continue`](super::RequestDecoder::expects_continue)).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A header name or value.
type Text = Cow<'static, str>;

/// An HTTP/1.1 response, built by chaining: `Response::new(404).with_body("no such
/// counter")`. [`ResponseEncoder`] writes it with its `Date` and `Content-Length`. A body
/// too large to hold is streamed instead ([`stream`](Self::stream)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    reason: Text,
    headers: Vec<(Text, Text)>,
    body: Vec<u8>,
    close: bool,
    head: bool,
    /// The version of the request it answers: an HTTP/1.0 client reads no chunked body.
    version: Version,
    /// How the body's end is marked.
    pub(super) delimit: Delimit,
}

/// How a response's body ends, as its head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delimit {
    /// The body held in the response: `Content-Length` is its length.
    Whole,
    /// A streamed body of this many bytes (`Content-Length`).
    Length(u64),
    /// A streamed body of unknown length, in chunks (`Transfer-Encoding: chunked`).
    Chunked,
    /// A streamed body of unknown length to an HTTP/1.0 client: it ends with the
    /// connection (`Connection: close`, no length).
    Close,
}

impl Response {
    /// A response with `status` and its standard reason phrase (`404` → `Not Found`), no
    /// headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            reason: Cow::Borrowed(reason(status)),
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            head: false,
            version: Version::Http11,
            delimit: Delimit::Whole,
        }
    }

    /// `200 OK`.
    pub fn ok() -> Self {
        Self::new(200)
    }

    /// Another reason phrase.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Adds a header. `Content-Length`, `Transfer-Encoding` and `Date` are the encoder's to
    /// write: a response that names them is refused ([`ResponseError::ReservedHeader`]).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<Text>, value: impl Into<Text>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds `Connection: close`: the client is told the connection closes after this
    /// response (the server still has to close it, as `Answer::SendAndClose` does).
    #[must_use]
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// The answer to a `HEAD` request: headers as for `GET`, `Content-Length` the body's,
    /// and no body written.
    #[must_use]
    pub fn for_head(mut self) -> Self {
        self.head = true;
        self
    }

    /// This response as the answer to `request`: [`for_head`](Self::for_head) when it is a
    /// `HEAD`, and [`close`](Self::close) unless it keeps the connection alive
    /// ([`Request::keep_alive`]); an HTTP/1.0 request kept alive is told so
    /// (`Connection: keep-alive`), since 1.0 closes by default.
    #[must_use]
    pub fn answering(mut self, request: &Request) -> Self {
        self.head |= request.method == Method::Head;
        self.keeping(request.keep_alive(), request.version)
    }

    /// [`close`](Self::close) unless `keep_alive`; kept alive for an HTTP/1.0 client, says so
    /// (`Connection: keep-alive`), since 1.0 closes by default.
    #[must_use]
    pub fn keeping(mut self, keep_alive: bool, version: Version) -> Self {
        self.version = version;
        self.close |= !keep_alive;
        if !self.close && version == Version::Http10 {
            self = self.with_header("Connection", "keep-alive");
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The headers added, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// True when it says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.close
    }

    /// True when it answers a `HEAD`, without its body.
    pub fn is_for_head(&self) -> bool {
        self.head
    }

    /// This response as the head of a body of `length` bytes written after it: chunked when
    /// the length is unknown, or, to an HTTP/1.0 client, up to the connection's close (which
    /// it is told, instead of a `Connection: keep-alive`).
    pub(super) fn streamed(mut self, length: Option<u64>) -> Self {
        self.body = Vec::new();
        self.delimit = match length {
            Some(n) => Delimit::Length(n),
            None if self.version == Version::Http11 => Delimit::Chunked,
            None => {
                self.close = true;
                self.headers
                    .retain(|(name, _)| !name.eq_ignore_ascii_case("connection"));
                Delimit::Close
            }
        };
        self
    }
}

/// Why a [`Response`] could not be encoded (nothing of it is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// A status outside 100..=999.
    #[error("status {0} is not a three-digit code")]
    InvalidStatus(u16),
    /// A reason phrase, header name or value with a CR, LF or other control byte (it would
    /// split the response), or an empty or non-token header name.
    #[error("header or reason {0:?} has bytes a response cannot carry")]
    InvalidText(String),
    /// A header the encoder writes itself: `Content-Length`, `Transfer-Encoding`, `Date`.
    #[error("header {0} is written by the encoder; do not add it")]
    ReservedHeader(String),
    /// A body (held or streamed) on a 1xx, 204 or 304 response, which cannot have one.
    #[error("a {0} response cannot have a body")]
    BodyNotAllowed(u16),
}

/// Writes [`Response`]s: the status line, `Date` (formatted once a second), the headers,
/// `Content-Length` (none on 1xx, 204 and 304), `Connection: close` when asked, then the
/// body (none for a `HEAD`). The head of a streamed response ([`Response::stream`]) says
/// `Content-Length` when its length is known, `Transfer-Encoding: chunked` otherwise (or,
/// to an HTTP/1.0 client, neither, and `Connection: close`), and no body follows it here. An [`Encoder`] for
/// [`Transport::write_frame`](crate::Transport::write_frame) and
/// [`Answered`](crate::codec::Answered). `ResponseEncoder::new()` reads the system clock.
#[derive(Debug, Clone)]
pub struct ResponseEncoder {
    /// Unix seconds now.
    clock: fn() -> u64,
    date: DateCache,
}

impl ResponseEncoder {
    /// An encoder whose `Date` is `clock()`, in Unix seconds (a fixed clock for tests).
    pub fn with_clock(clock: fn() -> u64) -> Self {
        Self {
            clock,
            date: DateCache::default(),
        }
    }
}

impl Encoder<Response> for ResponseEncoder {
    type Error = ResponseError;

    fn encode(&mut self, response: Response, dst: &mut Vec<u8>) -> Result<(), ResponseError> {
        self.encode_ref(&response, dst)
    }
}

impl Encoder<&Response> for ResponseEncoder {
    type Error = ResponseError;

    fn encode(&mut self, response: &Response, dst: &mut Vec<u8>) -> Result<(), ResponseError> {
        self.encode_ref(response, dst)
    }
}

impl ResponseEncoder {
    fn encode_ref(&mut self, r: &Response, dst: &mut Vec<u8>) -> Result<(), ResponseError> {
        check(r)?;
        let date = self.date.at((self.clock)());
        let _ = write!(dst, "HTTP/1.1 {} {}\r\nDate: {date}\r\n", r.status, r.reason);
        for (name, value) in &r.headers {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                dst.extend_from_slice(part);
            }
        }
        match r.delimit {
            Delimit::Whole if has_length(r.status) => {
                let _ = write!(dst, "Content-Length: {}\r\n", r.body.len());
            }
            Delimit::Length(n) => {
                let _ = write!(dst, "Content-Length: {n}\r\n");
            }
            Delimit::Chunked => dst.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Delimit::Whole | Delimit::Close => {}
        }
        if r.close {
            dst.extend_from_slice(b"Connection: close\r\n");
        }
        dst.extend_from_slice(b"\r\n");
        if !r.head && r.delimit == Delimit::Whole {
            dst.extend_from_slice(&r.body);
        }
        Ok(())
    }
}

/// Statuses that carry `Content-Length` and may have a body.
fn has_length(status: u16) -> bool {
    status >= 200 && status != 204 && status != 304
}

/// Refuses a response that cannot be written as it is.
fn check(r: &Response) -> Result<(), ResponseError> {
    if !(100..=999).contains(&r.status) {
        return Err(ResponseError::InvalidStatus(r.status));
    }
    if !has_length(r.status) && (!r.body.is_empty() || r.delimit != Delimit::Whole) {
        return Err(ResponseError::BodyNotAllowed(r.status));
    }
    if !is_field_value(r.reason.as_bytes()) {
        return Err(ResponseError::InvalidText(r.reason.to_string()));
    }
    for (name, value) in &r.headers {
        if !is_token(name) || !is_field_value(value.as_bytes()) {
            return Err(ResponseError::InvalidText(format!("{name}: {value}")));
        }
        if ["content-length", "transfer-encoding", "date"]
            .iter()
            .any(|reserved| name.eq_ignore_ascii_case(reserved))
        {
            return Err(ResponseError::ReservedHeader(name.to_string()));
        }
    }
    Ok(())
}

/// True for a token (RFC 9110, 5.6.2): a header name or a method.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
}

/// True for text a header value (or a reason phrase) may carry: no CR, LF or other control
/// byte but tab.
pub(crate) fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The standard reason phrase of `status` (RFC 9110), or `Unknown`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::Decoder;
    use crate::proto::codec::InBuf;
    use crate::proto::http::RequestDecoder;

    fn encoder() -> ResponseEncoder {
        ResponseEncoder::with_clock(|| 784_111_777)
    }

    fn encode(r: Response) -> Result<String, ResponseError> {
        let mut out = b"queued;".to_vec();
        encoder().encode(r, &mut out)?;
        Ok(String::from_utf8(out).unwrap_or_default())
    }

    const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    #[test]
    fn status_line_date_headers_length_and_body() {
        let got = encode(
            Response::new(201)
                .with_header("Content-Type", "application/json")
                .with_body("{}"),
        );
        assert_eq!(
            got,
            Ok(format!(
                "queued;HTTP/1.1 201 Created\r\n{DATE}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            ))
        );
        let got = encode(
            Response::new(405)
                .with_reason("Nope")
                .with_header("Allow", "GET")
                .close(),
        );
        assert_eq!(
            got,
            Ok(format!(
                "queued;HTTP/1.1 405 Nope\r\n{DATE}Allow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ))
        );
    }

    #[test]
    fn head_and_bodiless_statuses() {
        let got = encode(Response::ok().with_body("hello").for_head());
        assert_eq!(
            got,
            Ok(format!(
                "queued;HTTP/1.1 200 OK\r\n{DATE}Content-Length: 5\r\n\r\n"
            ))
        );
        let got = encode(Response::new(204));
        assert_eq!(got, Ok(format!("queued;HTTP/1.1 204 No Content\r\n{DATE}\r\n")));
        assert_eq!(
            encode(Response::new(304).with_body("x")),
            Err(ResponseError::BodyNotAllowed(304))
        );
    }

    #[test]
    fn streamed_heads_say_how_their_body_ends() {
        let head = |framing: &str| Ok(format!("queued;HTTP/1.1 200 OK\r\n{DATE}{framing}\r\n"));
        assert_eq!(
            encode(Response::ok().streamed(Some(7))),
            head("Content-Length: 7\r\n")
        );
        assert_eq!(
            encode(Response::ok().with_body("not written").streamed(None)),
            head("Transfer-Encoding: chunked\r\n")
        );
        let old = Response::ok().keeping(true, Version::Http10).streamed(None);
        assert_eq!(encode(old), head("Connection: close\r\n"));
        assert_eq!(
            encode(Response::ok().for_head().streamed(Some(7))),
            head("Content-Length: 7\r\n")
        );
        assert_eq!(
            encode(Response::new(204).streamed(None)),
            Err(ResponseError::BodyNotAllowed(204))
        );
    }

    #[test]
    fn what_would_split_or_reframe_a_response_is_refused() {
        let cases = [
            (Response::new(99), ResponseError::InvalidStatus(99)),
            (
                Response::ok().with_reason("a\r\nb"),
                ResponseError::InvalidText("a\r\nb".into()),
            ),
            (
                Response::ok().with_header("X", "a\r\nSet-Cookie: x"),
                ResponseError::InvalidText("X: a\r\nSet-Cookie: x".into()),
            ),
            (
                Response::ok().with_header("X Y", "a"),
                ResponseError::InvalidText("X Y: a".into()),
            ),
            (
                Response::ok().with_header("", "a"),
                ResponseError::InvalidText(": a".into()),
            ),
            (
                Response::ok().with_header("content-length", "1"),
                ResponseError::ReservedHeader("content-length".into()),
            ),
            (
                Response::ok().with_header("Transfer-Encoding", "chunked"),
                ResponseError::ReservedHeader("Transfer-Encoding".into()),
            ),
        ];
        for (r, want) in cases {
            let mut out = Vec::new();
            assert_eq!(encoder().encode(&r, &mut out), Err(want));
            assert!(out.is_empty(), "nothing written");
        }
    }

    #[test]
    fn answering_a_request_follows_its_method_and_keep_alive() {
        let mut d = RequestDecoder::default();
        let mut buf = InBuf::borrowed(b"HEAD / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let (Ok(Some(head)), Ok(Some(get))) = (d.decode(&mut buf), d.decode(&mut buf)) else {
            panic!("two requests")
        };
        let r = Response::ok().with_body("x").answering(&head);
        assert!(r.is_for_head() && r.closes());
        let r = Response::ok().with_body("x").answering(&get);
        assert!(!r.is_for_head() && !r.closes());
        assert_eq!(r.headers().count(), 0);
        let mut buf = InBuf::borrowed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let Ok(Some(old)) = d.decode(&mut buf) else {
            panic!("a request")
        };
        let r = Response::ok().answering(&old);
        assert!(!r.closes());
        assert_eq!(r.headers().collect::<Vec<_>>(), [("Connection", "keep-alive")]);
        assert_eq!(reason(413), "Content Too Large");
        assert_eq!(reason(799), "Unknown");
    }
}
