//! Cuts a connection's bytes into whole [`Request`]s.

use super::body::BodyReader;
use super::error::HttpError;
use super::head::parse_head;
use super::limits::HttpLimits;
use super::request::Request;
use crate::proto::codec::{Decoder, InBuf};

/// Decodes HTTP/1.0 and 1.1 requests, bodies included, within [`HttpLimits`]: a
/// [`Decoder`] for [`Framed`](crate::codec::Framed) (with
/// [`Answered`](crate::codec::Answered), for instance).
///
/// A body is framed by `Content-Length` or `Transfer-Encoding: chunked` (chunk extensions and
/// trailers are skipped); requests that could be framed two ways, the shape of request
/// smuggling (two `Content-Length`s, `Content-Length` with `Transfer-Encoding`, folded
/// header lines), are refused, as are an HTTP/1.1 request without `Host` and any request with
/// two (RFC 9112). Bounded: a head is refused as soon as it passes
/// [`max_head`](HttpLimits::max_head), a body as soon as it is announced or found over
/// [`max_body`](HttpLimits::max_body); nothing is allocated for what the peer only
/// announces, a body grows as its bytes arrive.
///
/// # `Expect: 100-continue`
///
/// A client that sends `Expect: 100-continue` waits for `100 Continue` (or a final answer)
/// before it sends the body. [`expects_continue`](Self::expects_continue) is true while such
/// a request's head has arrived and none of its body has: a
/// [`FrameHandler`](crate::codec::FrameHandler) writes [`CONTINUE`](super::CONTINUE) from
/// its `read_decoded`, which is given the decoder after each read (with `Answered`, from
/// [`interim`](crate::codec::Answered::interim), when no earlier answer is still to be
/// written, so that the interim answer does not overtake them).
///
/// ```
/// use weft::codec::{FrameHandler, Framed};
/// use weft::http::{CONTINUE, Request, RequestDecoder, Response, ResponseEncoder};
/// use weft::Transport;
///
/// /// Answers every request with the size of its body.
/// #[derive(Default)]
/// struct Sizes(ResponseEncoder);
///
/// impl FrameHandler for Sizes {
///     type Decoder = RequestDecoder;
///     fn frame_received(&mut self, req: Request, t: &Transport) {
///         let answer = Response::new(200).with_body(req.body.len().to_string()).answering(&req);
///         let _ = t.write_frame(&mut self.0, answer);
///     }
///     fn read_decoded(&mut self, d: &RequestDecoder, _buffered: usize, t: &Transport) {
///         if d.expects_continue() {
///             t.write(CONTINUE);
///         }
///     }
/// }
///
/// let protocol = Framed::new(RequestDecoder::default(), Sizes::default());
/// # let _ = protocol;
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestDecoder {
    limits: HttpLimits,
    /// The request whose body is being read.
    partial: Option<Partial>,
}

/// A request whose head arrived and whose body is still to come.
#[derive(Debug, Clone)]
struct Partial {
    request: Request,
    body: BodyReader,
    expect_continue: bool,
    /// Some of the body arrived.
    started: bool,
}

impl RequestDecoder {
    /// A decoder with these limits.
    pub fn new(limits: HttpLimits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// True while a request's head has arrived and its body is still to come: a partial
    /// request is held even when no bytes are buffered (for a deadline on slow bodies).
    pub fn in_body(&self) -> bool {
        self.partial.is_some()
    }

    /// True while a request with `Expect: 100-continue` has arrived without any of its body:
    /// the client waits for [`CONTINUE`](super::CONTINUE) before it sends it.
    pub fn expects_continue(&self) -> bool {
        self.partial
            .as_ref()
            .is_some_and(|p| p.expect_continue && !p.started)
    }
}

impl Decoder for RequestDecoder {
    type Frame = Request;
    type Error = HttpError;

    fn in_frame(&self) -> bool {
        self.in_body()
    }

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<Request>, HttpError> {
        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => {
                let parsed = parse_head(buf.as_slice(), &self.limits, |head| Partial {
                    request: Request::from_head(&head),
                    body: BodyReader::new(head.framing),
                    expect_continue: head.expect_continue,
                    started: false,
                })?;
                let Some((partial, len)) = parsed else {
                    return Ok(None);
                };
                buf.advance(len);
                if partial.body.is_done() {
                    return Ok(Some(partial.request));
                }
                partial
            }
        };
        partial.started |= !buf.is_empty();
        let limits = &self.limits;
        if partial
            .body
            .read(buf, &mut partial.request.body, limits)
            .map_err(|e| HttpError::from_body(e, limits))?
        {
            return Ok(Some(partial.request));
        }
        self.partial = Some(partial);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{BadRequest, Method, Version};

    /// Feeds `chunks` to a decoder with `limits`; returns the requests, then the error or
    /// the bytes left.
    fn decode_with(limits: HttpLimits, chunks: &[&[u8]]) -> (Vec<Request>, Result<Vec<u8>, HttpError>) {
        let mut d = RequestDecoder::new(limits);
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
            let bound = limits.max_head.max(4096) + chunk.len();
            assert!(buf.len() <= bound, "bounded: {} buffered", buf.len());
        }
        (out, Ok(buf.as_slice().to_vec()))
    }

    fn decode(chunks: &[&[u8]]) -> (Vec<Request>, Result<Vec<u8>, HttpError>) {
        decode_with(HttpLimits::default(), chunks)
    }

    /// The same outcome whole, split once at every byte, and byte by byte.
    fn at_every_split(input: &[u8]) -> (Vec<Request>, Result<Vec<u8>, HttpError>) {
        let whole = decode(&[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(
                decode(&[a, b]),
                whole,
                "{} split at {at}",
                String::from_utf8_lossy(input)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(&bytes), whole, "byte by byte");
        whole
    }

    fn bad(reason: BadRequest) -> HttpError {
        HttpError::BadRequest(reason)
    }

    #[test]
    fn a_request_with_headers_and_a_length_body() {
        let (reqs, rest) =
            at_every_split(b"POST /counter/a?x=1 HTTP/1.1\r\nHost: h\r\nX-Two: a\r\nx-two: b\r\nContent-Length: 3\r\n\r\n+12");
        assert_eq!(rest, Ok(vec![]));
        let [r] = reqs.as_slice() else { panic!("{reqs:?}") };
        assert_eq!(r.method, Method::Post);
        assert_eq!(
            (r.path.as_str(), r.path_only(), r.query()),
            ("/counter/a?x=1", "/counter/a", "x=1")
        );
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("HOST"), Some(b"h".as_slice()));
        assert_eq!(r.headers_named("X-TWO").collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.body, b"+12");
        assert!(r.keep_alive());
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let input = b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n4;name=value;q=\"a b\"\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\nMore: y\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (reqs, rest) = at_every_split(input);
        assert_eq!(rest, Ok(vec![]));
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!((reqs[1].method.clone(), reqs[1].body.len()), (Method::Get, 0));
        // No trailers.
        let (reqs, _) = at_every_split(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        );
        assert_eq!(reqs[0].body, b"a");
    }

    #[test]
    fn pipelined_requests_in_order() {
        let mut input = Vec::new();
        for i in 0..20 {
            input.extend_from_slice(
                format!(
                    "POST /{i} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{}",
                    i.to_string().len(),
                    i
                )
                .as_bytes(),
            );
            input.extend_from_slice(format!("GET /g{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        }
        input.extend_from_slice(b"GET /partial HT");
        let (reqs, rest) = at_every_split(&input);
        assert_eq!(rest, Ok(b"GET /partial HT".to_vec()));
        assert_eq!(reqs.len(), 40);
        for (i, pair) in reqs.chunks(2).enumerate() {
            assert_eq!(pair[0].body, i.to_string().as_bytes());
            assert_eq!(pair[1].path, format!("/g{i}"));
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
        ];
        for (input, want) in cases {
            let (reqs, _) = decode(&[input]);
            assert_eq!(reqs[0].keep_alive(), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn smuggling_shapes_and_malformed_requests_are_refused() {
        use BadRequest::*;
        let cases: Vec<(&[u8], HttpError)> = vec![
            (b"GARBAGE\r\n\r\n", bad(Syntax)),
            (b"GET / HTTP/1.1\r\n\r\n", bad(MissingHost)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: b\r\n\r\n", bad(DuplicateHost)),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", bad(DuplicateHost)),
            (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n", bad(Syntax)),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", bad(ObsFold)),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n", bad(ObsFold)),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::UnsupportedVersion),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                bad(DuplicateContentLength),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
                bad(DuplicateContentLength),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx",
                bad(InvalidContentLength),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx",
                bad(InvalidContentLength),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                bad(InvalidContentLength),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad(ContentLengthWithTransferEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                bad(ContentLengthWithTransferEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                bad(ChunkedNotFinal),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
                bad(ChunkedNotFinal),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad(ChunkedTwice),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad(TransferEncodingInHttp10),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1x\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
                bad(InvalidChunk),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: x\n\r\n",
                bad(InvalidChunk),
            ),
        ];
        for (input, want) in cases {
            let (reqs, got) = at_every_split(input);
            assert_eq!(
                (reqs, got),
                (vec![], Err(want)),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_are_errors_as_soon_as_they_are_passed() {
        let limits = HttpLimits {
            max_head: 64,
            max_headers: 3,
            max_body: 10,
        };
        let too_large = HttpError::HeadTooLarge {
            max_head: 64,
            max_headers: 3,
        };
        // A head that never ends fails once it passes max_head, however it is split.
        let flood = [b'x'; 65];
        assert_eq!(
            decode_with(limits, &[&flood[..64]]),
            (vec![], Ok(flood[..64].to_vec()))
        );
        assert_eq!(decode_with(limits, &[&flood]), (vec![], Err(too_large)));
        let many = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(decode_with(limits, &[many]), (vec![], Err(too_large)));
        // A body announced over max_body fails at the head, before any of it arrives.
        let announced = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(
            decode_with(limits, &[announced]).1,
            Err(HttpError::BodyTooLarge { max_body: 10 })
        );
        let fits = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789";
        assert_eq!(decode_with(limits, &[fits]).0.len(), 1);
        // Chunks summing over max_body fail at the size line that passes it.
        let chunks = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n";
        assert_eq!(
            decode_with(limits, &[chunks]).1,
            Err(HttpError::BodyTooLarge { max_body: 10 })
        );
        // Trailers count against max_head.
        let mut trailers = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        trailers.extend_from_slice(&[b'T'; 70]);
        assert_eq!(decode_with(limits, &[&trailers]).1, Err(too_large));
        // A chunk-size line without end fails at 4 KiB.
        let mut line = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        line.extend_from_slice(&[b'e'; 4096]);
        assert_eq!(decode(&[&line]).1, Err(bad(BadRequest::InvalidChunk)));
    }

    #[test]
    fn a_body_is_not_allocated_before_it_arrives() {
        let limits = HttpLimits {
            max_body: u64::MAX,
            ..HttpLimits::default()
        };
        let mut d = RequestDecoder::new(limits);
        let mut buf = InBuf::new();
        buf.extend(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000\r\n\r\nab");
        assert_eq!(d.decode(&mut buf), Ok(None));
        let held = d.partial.as_ref().map(|p| p.request.body.capacity());
        assert!(held.is_some_and(|c| c < 64), "{held:?}");
    }

    #[test]
    fn expects_continue_until_the_body_starts() {
        let mut d = RequestDecoder::default();
        let mut buf = InBuf::new();
        buf.extend(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.expects_continue() && d.in_body());
        buf.extend(b"ab");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(!d.expects_continue(), "the body started");
        buf.extend(b"cd");
        assert_eq!(
            d.decode(&mut buf).map(|r| r.map(|r| r.body)),
            Ok(Some(b"abcd".to_vec()))
        );
        assert!(!d.in_body());
        // Not without a body, nor for HTTP/1.0, nor when the body came with the head.
        for input in [
            b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n".as_slice(),
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nab",
        ] {
            let mut d = RequestDecoder::default();
            let mut buf = InBuf::borrowed(input);
            let _ = d.decode(&mut buf);
            assert!(!d.expects_continue(), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn errors_map_to_their_statuses() {
        let cases = [
            (bad(BadRequest::Syntax), 400),
            (
                HttpError::HeadTooLarge {
                    max_head: 1,
                    max_headers: 1,
                },
                431,
            ),
            (HttpError::BodyTooLarge { max_body: 1 }, 413),
            (HttpError::UnsupportedTransferEncoding, 501),
            (HttpError::UnsupportedVersion, 505),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status);
            let r = e.response();
            assert_eq!((r.status(), r.closes()), (status, true));
            assert!(!r.body().is_empty());
        }
    }
}
