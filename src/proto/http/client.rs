//! The client side: [`ResponseDecoder`] cuts a connection's bytes into whole
//! [`ClientResponse`]s, told by its [`RequestEncoder`] which requests were `HEAD`s.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::body::{BodyError, BodyReader, Count};
use super::error::BadResponse;
use super::head::{Asked, Framing, ResponseFraming, ResponseHead, parse_response_head};
use super::limits::HttpLimits;
use super::request::{Method, Version};
use super::request_encoder::RequestEncoder;
use crate::proto::codec::{Decoder, InBuf};

/// One HTTP/1.x response as a client receives it, whole: what [`ResponseDecoder`] yields
/// (a chunked body joined, its trailers dropped). Its lookups are [`Request`](super::Request)'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// The version of the status line.
    pub version: Version,
    /// The status code (100..=999; never an interim 1xx other than 101, which the decoder
    /// skips).
    pub status: u16,
    /// The reason phrase, as sent (may be empty).
    pub reason: String,
    /// The headers in order, names as sent; [`header`](Self::header) looks one up.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body: empty without one, or when the decoder
    /// [drops bodies](ResponseDecoder::dropping_bodies).
    pub body: Vec<u8>,
    /// The body's length in bytes: `body.len()`, or the bytes dropped.
    pub body_len: u64,
    /// The server lets the connection stay open after it.
    keep_alive: bool,
}

impl ClientResponse {
    /// The response a parsed head starts, its body still to come.
    fn from_head(head: &ResponseHead<'_, '_>) -> Self {
        Self {
            version: head.version,
            status: head.status,
            reason: head.reason.to_owned(),
            headers: head
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            body_len: 0,
            keep_alive: head.keep_alive,
        }
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether the server lets the connection stay open after this response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive` (the last
    /// such token wins); never when the body ran to the connection's close, or after a
    /// `Transfer-Encoding` in an HTTP/1.0 response (RFC 9112, 6.1). A client sends nothing
    /// more on a connection whose response does not.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

/// The requests written on a connection and not answered yet, oldest first: what a
/// [`RequestEncoder`] tells its [`ResponseDecoder`].
#[derive(Debug, Clone, Default)]
pub(crate) struct SentQueue(Rc<RefCell<VecDeque<Asked>>>);

impl SentQueue {
    /// A request with `method` was written.
    pub(crate) fn push(&self, method: &Method) {
        let asked = match method {
            Method::Head => Asked::Head,
            Method::Other(token) if token == "CONNECT" => Asked::Connect,
            _ => Asked::Other,
        };
        self.0.borrow_mut().push_back(asked);
    }
}

/// Which requests the responses answer.
#[derive(Debug)]
pub(crate) enum Expecting {
    /// Every response answers a request like this.
    All(Asked),
    /// The requests a [`RequestEncoder`] wrote, in order (past them, `Asked::Other`).
    Sent(SentQueue),
}

impl Expecting {
    /// The request the next response answers.
    fn next(&self) -> Asked {
        match self {
            Self::All(asked) => *asked,
            Self::Sent(q) => q.0.borrow().front().copied().unwrap_or_default(),
        }
    }

    /// The next response arrived (a final one).
    fn answered(&self) {
        if let Self::Sent(q) = self {
            q.0.borrow_mut().pop_front();
        }
    }
}

/// What a response decoder makes of each response: [`ClientResponse`], or less (the load
/// generator keeps the status alone).
pub(crate) trait Keep: Sized {
    /// Starts a response from its head.
    fn start(head: &ResponseHead<'_, '_>) -> Self;

    /// Reads what `buf` holds of the response's body, keeping it when `collect` (or
    /// dropping it): true once it is complete.
    fn read_body(
        &mut self,
        body: &mut BodyReader,
        buf: &mut InBuf<'_>,
        limits: &HttpLimits,
        collect: bool,
    ) -> Result<bool, BodyError>;
}

impl Keep for ClientResponse {
    fn start(head: &ResponseHead<'_, '_>) -> Self {
        Self::from_head(head)
    }

    fn read_body(
        &mut self,
        body: &mut BodyReader,
        buf: &mut InBuf<'_>,
        limits: &HttpLimits,
        collect: bool,
    ) -> Result<bool, BodyError> {
        if collect {
            let done = body.read(buf, &mut self.body, limits)?;
            self.body_len = self.body.len() as u64;
            Ok(done)
        } else {
            let mut count = Count(self.body_len);
            let done = body.read(buf, &mut count, limits);
            self.body_len = count.0;
            done
        }
    }
}

/// The response decoder's machinery, for any [`Keep`]: the one reader of HTTP responses
/// ([`ResponseDecoder`], and `weft load`'s reader).
#[derive(Debug)]
pub(crate) struct Responses<T> {
    limits: HttpLimits,
    expecting: Expecting,
    /// Keep the bodies (else drop them).
    collect: bool,
    /// The response whose body is being read.
    partial: Option<(T, BodyReader)>,
    /// A `101` or a 2xx to `CONNECT` arrived: what follows is not HTTP.
    switched: bool,
}

impl<T: Keep> Responses<T> {
    /// Responses to the requests `expecting` says, within `limits`, their bodies kept when
    /// `collect`.
    pub(crate) fn new(limits: HttpLimits, expecting: Expecting, collect: bool) -> Self {
        Self {
            limits,
            expecting,
            collect,
            partial: None,
            switched: false,
        }
    }

    /// True while a response's head has arrived and its body is still to come.
    pub(crate) fn in_body(&self) -> bool {
        self.partial.is_some()
    }

    /// Forgets any partial response (the connection is new).
    pub(crate) fn reset(&mut self) {
        self.partial = None;
        self.switched = false;
    }

    /// Takes one whole final response from the front of `buf` (interim ones are skipped), or
    /// `Ok(None)` until more bytes arrive.
    pub(crate) fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<T>, BadResponse> {
        let limits = &self.limits;
        let (mut response, mut body) = match self.partial.take() {
            Some(partial) => partial,
            None => loop {
                if self.switched {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(BadResponse::AfterSwitch)
                    };
                }
                let asked = self.expecting.next();
                let parsed = parse_response_head(buf.as_slice(), limits, asked, |head| {
                    (!head.is_interim()).then(|| (T::start(&head), head.framing, head.status))
                })?;
                let Some((parsed, len)) = parsed else {
                    return Ok(None);
                };
                buf.advance(len);
                let Some((response, framing, status)) = parsed else {
                    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    continue;
                };
                self.expecting.answered();
                self.switched =
                    status == 101 || (asked == Asked::Connect && (200..300).contains(&status));
                let body = match framing {
                    ResponseFraming::Length(n) => BodyReader::new(Framing::Length(n)),
                    ResponseFraming::Chunked => BodyReader::new(Framing::Chunked),
                    ResponseFraming::UntilClose => BodyReader::until_close(),
                };
                if body.is_done() {
                    return Ok(Some(response));
                }
                break (response, body);
            },
        };
        let done = response
            .read_body(&mut body, buf, limits, self.collect)
            .map_err(|e| BadResponse::from_body(e, limits))?;
        if done {
            return Ok(Some(response));
        }
        self.partial = Some((response, body));
        Ok(None)
    }

    /// The connection's end: completes a response whose body runs to it.
    ///
    /// # Errors
    ///
    /// [`BadResponse::Truncated`]: part of a response is buffered or read.
    pub(crate) fn decode_eof(&mut self, buf: &mut InBuf<'_>) -> Result<Option<T>, BadResponse> {
        match self.partial.take() {
            _ if self.switched => Ok(None),
            Some((response, BodyReader::UntilClose { .. })) => Ok(Some(response)),
            Some(_) => Err(BadResponse::Truncated),
            None if buf.is_empty() => Ok(None),
            None => Err(BadResponse::Truncated),
        }
    }
}

/// Decodes HTTP/1.0 and 1.1 responses, bodies included, within [`HttpLimits`]: the client's
/// [`Decoder`] for [`Framed`](crate::codec::Framed), beside a [`RequestEncoder`] from
/// [`request_encoder`](Self::request_encoder) that writes the requests.
///
/// Framing follows RFC 9112, 6.3:
/// - interim responses (1xx other than 101: `100 Continue`, `103 Early Hints`) are skipped;
///   the final response that follows is the answer;
/// - `101 Switching Protocols`, and a 2xx answer to `CONNECT`, are yielded without a body,
///   and end HTTP on the connection: bytes after them are [`BadResponse::AfterSwitch`]
///   (a client that upgrades reads the connection itself from then on);
/// - 204, 304 and the answer to a `HEAD` have no body, whatever their headers say. The
///   decoder knows which requests were `HEAD`s from its [`RequestEncoder`], in the order
///   they were written, so a client that pipelines gets each answer right; responses past
///   the requests it wrote (or with no encoder) are read as answers to a `GET`;
/// - a body is framed by `Transfer-Encoding` ending in `chunked` (extensions and trailers
///   skipped), else `Content-Length` (the same length repeated is accepted, lengths that
///   disagree or `Content-Length` with `Transfer-Encoding` are refused), else by the
///   connection's close: [`decode_eof`](Decoder::decode_eof) completes it when the server
///   closes, and such a response does not [keep the connection](ClientResponse::keep_alive).
///
/// Bounded: a head is refused as soon as it passes [`max_head`](HttpLimits::max_head) or
/// [`max_headers`](HttpLimits::max_headers), a body as soon as it is announced or found over
/// [`max_body`](HttpLimits::max_body) (unless bodies are
/// [dropped](Self::dropping_bodies)); a body grows as its bytes arrive. A connection that
/// ends in the middle of a response is [`BadResponse::Truncated`].
///
/// One decoder, and its encoder, per connection.
///
/// ```
/// use weft::codec::{FrameHandler, Framed};
/// use weft::http::{ClientResponse, Request, RequestEncoder, ResponseDecoder};
/// use weft::Transport;
///
/// /// Asks for `/` and prints the answer's status and size.
/// struct Fetch(RequestEncoder);
///
/// impl FrameHandler for Fetch {
///     type Decoder = ResponseDecoder;
///     fn connection_made(&mut self, t: &Transport) {
///         let _ = t.write_frame(&mut self.0, Request::get("/").with_header("Host", "example.com"));
///     }
///     fn frame_received(&mut self, r: ClientResponse, t: &Transport) {
///         println!("{} {} bytes", r.status, r.body.len());
///         t.lose_connection();
///     }
/// }
///
/// let decoder = ResponseDecoder::default();
/// let fetch = Fetch(decoder.request_encoder());
/// let protocol = Framed::new(decoder, fetch);
/// # let _ = protocol;
/// ```
#[derive(Debug)]
pub struct ResponseDecoder {
    responses: Responses<ClientResponse>,
    sent: SentQueue,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new(HttpLimits::default())
    }
}

impl ResponseDecoder {
    /// A decoder with these limits, keeping the bodies.
    pub fn new(limits: HttpLimits) -> Self {
        let sent = SentQueue::default();
        Self {
            responses: Responses::new(limits, Expecting::Sent(sent.clone()), true),
            sent,
        }
    }

    /// Drops the bodies instead of keeping them: each response comes with an empty `body`
    /// and its length in [`body_len`](ClientResponse::body_len), and
    /// [`max_body`](HttpLimits::max_body) no longer applies (nothing is kept). What a load
    /// generator or a health check wants.
    #[must_use]
    pub fn dropping_bodies(mut self) -> Self {
        self.responses.collect = false;
        self.responses.limits.max_body = u64::MAX;
        self
    }

    /// The encoder of this connection's requests: it tells the decoder, in order, which of
    /// them were `HEAD`s (or `CONNECT`s), whose answers are framed differently.
    pub fn request_encoder(&self) -> RequestEncoder {
        RequestEncoder::telling(self.sent.clone())
    }

    /// Its limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.responses.limits
    }

    /// Requests its encoder wrote that no final response has answered yet.
    pub fn awaiting(&self) -> usize {
        self.sent.0.borrow().len()
    }

    /// True while a response's head has arrived and its body is still to come.
    pub fn in_body(&self) -> bool {
        self.responses.in_body()
    }
}

impl Decoder for ResponseDecoder {
    type Frame = ClientResponse;
    type Error = BadResponse;

    fn in_frame(&self) -> bool {
        self.in_body()
    }

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<ClientResponse>, BadResponse> {
        self.responses.decode(buf)
    }

    fn decode_eof(&mut self, buf: &mut InBuf<'_>) -> Result<Option<ClientResponse>, BadResponse> {
        self.responses.decode_eof(buf)
    }
}
