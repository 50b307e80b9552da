//! The client side: [`ResponseDecoder`] cuts a connection's bytes into whole
//! [`ClientResponse`]s, told by its [`RequestEncoder`] which requests were `HEAD`s.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::body::{BodyError, BodyReader, Count};
use super::error::BadResponse;
use super::head::{Asked, Framing, ResponseFraming, ResponseHead, parse_response_head};
use super::limits::HttpLimits;
use super::request::{Method, Version, named, owned};
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
            headers: owned(head.headers),
            body: Vec::new(),
            body_len: 0,
            keep_alive: head.keep_alive,
        }
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        named(&self.headers, name).next()
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        named(&self.headers, name)
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
                self.switched = asked.switches(status);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::Encoder;
    use crate::proto::http::Request;

    /// What a decoder made of a stream: the responses, then the error, or the bytes left.
    type Outcome = (Vec<ClientResponse>, Result<Vec<u8>, BadResponse>);

    /// Feeds `chunks` to a decoder built by `make` after `heads` HEAD and `others` GET
    /// requests went out (in the order `methods` gives), then the EOF when `eof`.
    fn decode_with(
        make: &dyn Fn() -> ResponseDecoder,
        methods: &[Method],
        chunks: &[&[u8]],
        eof: bool,
    ) -> Outcome {
        let mut d = make();
        let mut enc = d.request_encoder();
        for m in methods {
            let mut out = Vec::new();
            let req = Request::new(m.clone(), "/").with_header("Host", "h");
            assert_eq!(enc.encode(req, &mut out), Ok(()));
        }
        let mut buf = InBuf::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend(chunk);
            while !buf.is_empty() {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
            let bound = d.limits().max_head.max(4096) + chunk.len();
            assert!(buf.len() <= bound, "bounded: {} buffered", buf.len());
        }
        if eof {
            match d.decode_eof(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => return (out, Err(e)),
            }
        }
        (out, Ok(buf.as_slice().to_vec()))
    }

    /// The same outcome whole, split once at every byte, and byte by byte.
    fn every_split(
        make: &dyn Fn() -> ResponseDecoder,
        methods: &[Method],
        input: &[u8],
        eof: bool,
    ) -> Outcome {
        let whole = decode_with(make, methods, &[input], eof);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let split = decode_with(make, methods, &[a, b], eof);
            assert_eq!(split, whole, "{} split at {at}", String::from_utf8_lossy(input));
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_with(make, methods, &bytes, eof), whole, "byte by byte");
        whole
    }

    fn at_every_split(input: &[u8]) -> Outcome {
        every_split(&ResponseDecoder::default, &[], input, false)
    }

    fn bodies(responses: &[ClientResponse]) -> Vec<(u16, String)> {
        responses
            .iter()
            .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
            .collect()
    }

    #[test]
    fn a_response_with_headers_and_a_length_body() {
        let (rs, rest) = at_every_split(
            b"HTTP/1.1 201 Made Here\r\nX-Two: a\r\nContent-Length: 5\r\nx-two: b\r\n\r\nhello",
        );
        assert_eq!(rest, Ok(vec![]));
        let [r] = rs.as_slice() else { panic!("{rs:?}") };
        assert_eq!(
            (r.version, r.status, r.reason.as_str()),
            (Version::Http11, 201, "Made Here")
        );
        assert_eq!(r.header("content-LENGTH"), Some(b"5".as_slice()));
        assert_eq!(r.headers_named("X-TWO").collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(r.header("missing"), None);
        assert_eq!((r.body.as_slice(), r.body_len), (b"hello".as_slice(), 5));
        assert!(r.keep_alive() && r.is_success());
    }

    #[test]
    fn chunked_with_extensions_and_trailers_then_pipelined() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
            4;name=value;q=\"a b\"\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\nMore: y\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 2";
        let (rs, rest) = at_every_split(input);
        assert_eq!(rest, Ok(b"HTTP/1.1 2".to_vec()));
        assert_eq!(
            bodies(&rs),
            [
                (200, "Wikipedia in\r\n\r\nchunks.".into()),
                (404, "no".into()),
                (200, String::new())
            ]
        );
        assert_eq!(rs[0].body_len, 23);
    }

    #[test]
    fn pipelined_answers_to_head_get_and_bodiless_statuses() {
        use Method::*;
        // GET, HEAD, GET (interim first), HEAD, GET (204), GET (304), GET.
        let methods = [Get, Head, Get, Head, Get, Get, Get];
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none\
            HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n\
            HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo\
            HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
            HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree";
        let (rs, rest) = every_split(&ResponseDecoder::default, &methods, input, false);
        assert_eq!(rest, Ok(vec![]));
        assert_eq!(
            bodies(&rs),
            [
                (200, "one".into()),
                (200, String::new()),
                (200, "two".into()),
                (404, String::new()),
                (204, String::new()),
                (304, String::new()),
                (200, "three".into()),
            ]
        );
        // The encoder told the decoder of each request; all are answered.
        let d = ResponseDecoder::default();
        let mut enc = d.request_encoder();
        let mut out = Vec::new();
        for m in [Head, Get] {
            let _ = enc.encode(Request::new(m, "/").with_header("Host", "h"), &mut out);
        }
        assert_eq!(d.awaiting(), 2);
    }

    #[test]
    fn switching_protocols_and_connect_end_http() {
        let (rs, rest) = at_every_split(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!((rs.len(), rest), (1, Ok(vec![])));
        let (rs, rest) = decode_with(
            &ResponseDecoder::default,
            &[],
            &[b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"],
            true,
        );
        assert_eq!((rs[0].status, rest), (101, Err(BadResponse::AfterSwitch)));
        let connect = [Method::Other("CONNECT".into())];
        let (rs, rest) = decode_with(
            &ResponseDecoder::default,
            &connect,
            &[b"HTTP/1.1 200 Connection Established\r\n\r\n", b"tunnel"],
            true,
        );
        assert_eq!((rs.len(), rest), (1, Err(BadResponse::AfterSwitch)));
    }

    #[test]
    fn a_body_delimited_by_the_close() {
        let input = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of this\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        let (rs, rest) = every_split(&ResponseDecoder::default, &[], input, true);
        assert_eq!(rest, Ok(vec![]));
        assert_eq!(
            bodies(&rs),
            [(200, "all of this\r\n\r\nHTTP/1.1 200 OK\r\n\r\n".into())]
        );
        assert!(!rs[0].keep_alive());
        // Without the EOF it is still to come; a transfer coding not ending in chunked
        // runs to the close too.
        assert_eq!(
            decode_with(&ResponseDecoder::default, &[], &[input], false).0,
            vec![]
        );
        let coded = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz";
        let (rs, rest) = every_split(&ResponseDecoder::default, &[], coded, true);
        assert_eq!((bodies(&rs), rest), (vec![(200, "zz".into())], Ok(vec![])));
        // Empty: the head alone, then the close.
        let (rs, _) = every_split(&ResponseDecoder::default, &[], b"HTTP/1.1 200 OK\r\n\r\n", true);
        assert_eq!(bodies(&rs), [(200, String::new())]);
    }

    #[test]
    fn a_close_in_the_middle_is_truncated() {
        for input in [
            b"HTTP/1.1 200 OK\r\nContent-Le".as_slice(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let (rs, rest) = every_split(&ResponseDecoder::default, &[], input, true);
            assert_eq!(
                (rs, rest),
                (vec![], Err(BadResponse::Truncated)),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // Nothing pending at the close is no error.
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            every_split(&ResponseDecoder::default, &[], whole, true).1,
            Ok(vec![])
        );
    }

    #[test]
    fn keep_alive_follows_version_connection_and_framing() {
        let cases: [(&[u8], bool); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
        ];
        for (input, want) in cases {
            let (rs, _) = decode_with(&ResponseDecoder::default, &[], &[input], false);
            assert_eq!(rs[0].keep_alive(), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_and_ambiguous_responses_are_refused() {
        use BadResponse::*;
        let cases: Vec<(&[u8], BadResponse)> = vec![
            (b"HTTX/1.1 200 OK\r\n\r\n", Syntax),
            (b"HTTP/2.0 200 OK\r\n\r\n", Syntax),
            (b"HTTP/1.1 20 OK\r\n\r\n", Syntax),
            (b"HTTP/1.1 099 Low\r\n\r\n", Syntax),
            (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", Syntax),
            (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", Syntax),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
                InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                ContentLengthWithTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                ChunkedTwice,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                InvalidChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                InvalidChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                InvalidChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n",
                InvalidChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: x\n\r\n",
                InvalidChunk,
            ),
        ];
        for (input, want) in cases {
            let got = at_every_split(input);
            assert_eq!(got, (vec![], Err(want)), "{}", String::from_utf8_lossy(input));
        }
        // The same length repeated is that length.
        let (rs, _) =
            at_every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nok");
        assert_eq!(bodies(&rs), [(200, "ok".into())]);
    }

    #[test]
    fn limits_are_errors_as_soon_as_they_are_passed() {
        let limits = HttpLimits {
            max_head: 64,
            max_headers: 3,
            max_body: 10,
        };
        let small = move || ResponseDecoder::new(limits);
        let too_large = BadResponse::HeadTooLarge {
            max_head: 64,
            max_headers: 3,
        };
        assert_eq!(
            decode_with(&small, &[], &[b"HTTP/"], false).1,
            Ok(b"HTTP/".to_vec())
        );
        let endless = b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(every_split(&small, &[], endless, false), (vec![], Err(too_large)));
        let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(decode_with(&small, &[], &[many], false).1, Err(too_large));
        // Announced over max_body: refused at the head.
        let announced = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n";
        let over = BadResponse::BodyTooLarge { max_body: 10 };
        assert_eq!(decode_with(&small, &[], &[announced], false).1, Err(over));
        // Chunks, or bytes until the close, summing over it: refused as they pass it.
        let chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n";
        assert_eq!(every_split(&small, &[], chunks, false), (vec![], Err(over)));
        let until_close = b"HTTP/1.1 200 OK\r\n\r\n0123456789x";
        assert_eq!(every_split(&small, &[], until_close, true), (vec![], Err(over)));
        // Trailers count against max_head.
        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        trailers.extend_from_slice(&[b'T'; 70]);
        assert_eq!(decode_with(&small, &[], &[&trailers], false).1, Err(too_large));
        // Dropping bodies: max_body does not apply, the length is counted.
        let dropping = move || ResponseDecoder::new(limits).dropping_bodies();
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n0123456789ab\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n6789ab\r\n0\r\n\r\n\
            HTTP/1.1 200 OK\r\n\r\n0123456789abcdef";
        let (rs, rest) = every_split(&dropping, &[], big, true);
        assert_eq!(rest, Ok(vec![]));
        let lens: Vec<(usize, u64)> = rs.iter().map(|r| (r.body.len(), r.body_len)).collect();
        assert_eq!(lens, [(0, 12), (0, 12), (0, 16)]);
    }

    #[test]
    fn a_body_is_not_allocated_before_it_arrives() {
        let limits = HttpLimits {
            max_body: u64::MAX,
            ..HttpLimits::default()
        };
        let mut d = ResponseDecoder::new(limits);
        let mut buf = InBuf::new();
        buf.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\nab");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.in_frame());
        let held = d.responses.partial.as_ref().map(|(r, _)| r.body.capacity());
        assert!(held.is_some_and(|c| c < 64), "{held:?}");
    }
}
