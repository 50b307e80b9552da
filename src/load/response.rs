//! The load generator's HTTP response reader: [`weft::http`](crate::http)'s response decoder
//! (the one response-head parser and the one chunked parser), keeping the status and whether
//! the server closes, and skipping bodies (framed by `Content-Length`, `chunked` transfer
//! coding, or the connection's end) without buffering them; only a head split across reads
//! is kept, up to [`MAX_HEAD`].

use crate::proto::codec::InBuf;
use crate::proto::http::HttpLimits;
use crate::proto::http::body::{BodyError, BodyReader, Count};
use crate::proto::http::client::{Expecting, Keep, Responses};
use crate::proto::http::head::{Asked, ResponseHead};

pub use crate::proto::http::BadResponse as ResponseError;

/// Largest response head (status line and headers, or trailers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one response.
const MAX_HEADERS: usize = 64;
/// A response's bounds: bodies are skipped, so any length is read.
const LIMITS: HttpLimits = HttpLimits {
    max_head: MAX_HEAD,
    max_headers: MAX_HEADERS,
    max_body: u64::MAX,
};
/// Capacity the buffer of a split head keeps once emptied.
const RETAIN: usize = 16 * 1024;

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The server will close the connection after it (`Connection: close`, HTTP/1.0
    /// without keep-alive, or a body that runs to the close).
    pub close: bool,
}

impl Response {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The status is all the load generator keeps; bodies are counted and dropped.
impl Keep for Response {
    fn start(head: &ResponseHead<'_, '_>) -> Self {
        Self {
            status: head.status,
            close: !head.keep_alive,
        }
    }

    fn read_body(
        &mut self,
        body: &mut BodyReader,
        buf: &mut InBuf<'_>,
        limits: &HttpLimits,
        _collect: bool,
    ) -> Result<bool, BodyError> {
        body.read(buf, &mut Count::default(), limits)
    }
}

/// Reads a stream of responses.
#[derive(Debug)]
pub struct ResponseReader {
    responses: Responses<Response>,
    /// A response head split across reads.
    buf: InBuf<'static>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    /// A reader at the start of a response.
    pub fn new() -> Self {
        Self::expecting(Asked::Other)
    }

    /// A reader of the responses to HEAD requests, which have no body whatever their
    /// `Content-Length` says.
    pub fn for_head() -> Self {
        Self::expecting(Asked::Head)
    }

    fn expecting(asked: Asked) -> Self {
        Self {
            responses: Responses::new(LIMITS, Expecting::All(asked), false),
            buf: InBuf::new(),
        }
    }

    /// Forgets any partial response (for a new connection).
    pub fn reset(&mut self) {
        self.responses.reset();
        self.buf = InBuf::new();
    }

    /// True when some bytes of a response have been read but not all of it.
    pub fn in_response(&self) -> bool {
        self.responses.in_body() || !self.buf.is_empty()
    }

    /// Reads `data`, calling `on_response` for every response it completes, in order.
    ///
    /// # Errors
    ///
    /// The stream is not HTTP/1.x; the reader is then unusable until [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8], mut on_response: impl FnMut(Response)) -> Result<(), ResponseError> {
        let responses = &mut self.responses;
        self.buf.decode_read(data, RETAIN, |buf| {
            while !buf.is_empty() {
                match responses.decode(buf)? {
                    Some(response) => on_response(response),
                    None => break,
                }
            }
            Ok(())
        })
    }

    /// The connection ended: completes a response whose body runs to the end, if any.
    pub fn finish(&mut self) -> Option<Response> {
        self.responses.decode_eof(&mut self.buf).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every `step` bytes; returns the responses.
    fn read_split(input: &[u8], step: usize) -> Result<Vec<Response>, ResponseError> {
        let mut r = ResponseReader::new();
        let mut out = Vec::new();
        for part in input.chunks(step) {
            r.feed(part, |resp| out.push(resp))?;
        }
        out.extend(r.finish());
        Ok(out)
    }

    fn statuses(input: &[u8]) -> Vec<u16> {
        // Every split gives the same answer.
        let whole = read_split(input, input.len().max(1)).unwrap();
        for step in [1, 2, 3, 7, 16] {
            assert_eq!(read_split(input, step).unwrap(), whole, "split every {step}");
        }
        whole.iter().map(|r| r.status).collect()
    }

    const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: x\r\n\r\nHello, World!";

    #[test]
    fn responses_to_head_have_no_body_whatever_they_announce() {
        let mut r = ResponseReader::for_head();
        let mut statuses = Vec::new();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n";
        r.feed(two, |resp| statuses.push(resp.status)).unwrap();
        assert_eq!(statuses, [200, 404]);
        assert!(!r.in_response());
    }

    #[test]
    fn content_length_pipelined() {
        let mut input = HELLO.repeat(3);
        input.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(statuses(&input), [200, 200, 200, 404]);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;name=v\r\nHello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n\
            HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(statuses(input), [200, 500]);
    }

    #[test]
    fn no_body_statuses_and_interim() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n\
            HTTP/1.1 304 Not Modified\r\n\r\n";
        assert_eq!(statuses(input), [204, 304]);
    }

    #[test]
    fn body_until_close_and_close_flags() {
        let input = b"HTTP/1.0 200 OK\r\n\r\nsome body bytes";
        let got = read_split(input, 4).unwrap();
        assert_eq!(
            got,
            [Response {
                status: 200,
                close: true
            }]
        );
        let mut r = ResponseReader::new();
        let mut seen = Vec::new();
        r.feed(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            |x| seen.push(x),
        )
        .unwrap();
        r.feed(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            |x| seen.push(x),
        )
        .unwrap();
        assert_eq!(seen.iter().map(|r| r.close).collect::<Vec<_>>(), [true, false]);
        assert!(!seen[0].is_success() || seen[0].status == 200);
    }

    #[test]
    fn partial_state_is_visible_and_resettable() {
        let mut r = ResponseReader::new();
        r.feed(&HELLO[..20], |_| panic!("not complete")).unwrap();
        assert!(r.in_response());
        r.reset();
        assert!(!r.in_response());
        let mut n = 0;
        r.feed(HELLO, |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(!r.in_response());
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"HTTX/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
        ] {
            assert!(
                read_split(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(read_split(bad, 1).is_err());
        }
        let mut r = ResponseReader::new();
        r.feed(b"HTTP/1.1 200 OK\r\nX: ", |_| ()).unwrap();
        let flood = vec![b'a'; 1024];
        let result = (0..MAX_HEAD / 1024 + 2).try_for_each(|_| r.feed(&flood, |_| ()));
        assert_eq!(
            result,
            Err(ResponseError::HeadTooLarge {
                max_head: MAX_HEAD,
                max_headers: MAX_HEADERS
            })
        );
    }
}
