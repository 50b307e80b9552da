//! An incremental HTTP/1.1 response reader for the load generator: status line and headers
//! (by `httparse`), then the body framed by `Content-Length`, `chunked` transfer coding, or
//! the connection's end. Bodies are skipped, never buffered; only a header block split
//! across reads is kept, up to [`MAX_HEAD`].

/// Largest response header block accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one response.
const MAX_HEADERS: usize = 64;

/// One complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The server will close the connection after it (`Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub close: bool,
}

impl Response {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why the bytes are not an HTTP/1.1 response stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The status line or a header is malformed.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The header block is larger than [`MAX_HEAD`].
    #[error("response header block over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A bad `Content-Length` or chunk size.
    #[error("bad body framing: {0}")]
    Framing(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `seen` says whether any digit came yet.
    Size {
        size: u64,
        seen: bool,
    },
    /// Skipping a chunk extension up to the line end.
    Extension {
        size: u64,
    },
    /// After the size line's CR, expecting LF.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    /// CR then LF after chunk data.
    DataCr,
    DataLf,
    /// Trailer lines; `len` bytes seen on the current line (0 at a line start).
    Trailer {
        len: usize,
    },
    /// After a trailer line's CR.
    TrailerLf {
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body {
        left: u64,
        response: Response,
    },
    Chunked {
        chunk: Chunk,
        response: Response,
    },
    /// No length: the body runs to the connection's end.
    UntilClose {
        response: Response,
    },
}

/// Reads a stream of responses.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    /// A header block split across reads.
    head: Vec<u8>,
    /// The requests are HEADs: responses have no body, whatever their headers say.
    bodiless: bool,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    /// A reader at the start of a response.
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            bodiless: false,
        }
    }

    /// A reader of the responses to HEAD requests, which have no body whatever their
    /// `Content-Length` says.
    pub fn for_head() -> Self {
        Self {
            bodiless: true,
            ..Self::new()
        }
    }

    /// Forgets any partial response (for a new connection); keeps the buffer's capacity.
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.head.clear();
    }

    /// True when some bytes of a response have been read but not all of it.
    pub fn in_response(&self) -> bool {
        self.state != State::Head || !self.head.is_empty()
    }

    /// Reads `data`, calling `on_response` for every response it completes, in order.
    ///
    /// # Errors
    ///
    /// The stream is not HTTP/1.1; the reader is then unusable until [`reset`](Self::reset).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_response: impl FnMut(Response),
    ) -> Result<(), ResponseError> {
        while !data.is_empty() {
            let used = match self.state {
                State::Head => self.read_head(data)?,
                State::Body { left, response } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    let left = left - n as u64;
                    self.state = State::Body { left, response };
                    if left == 0 {
                        self.state = State::Head;
                        on_response(response);
                    }
                    n
                }
                State::Chunked { chunk, response } => {
                    let (n, next) = read_chunked(chunk, data)?;
                    match next {
                        Some(chunk) => self.state = State::Chunked { chunk, response },
                        None => {
                            self.state = State::Head;
                            on_response(response);
                        }
                    }
                    n
                }
                State::UntilClose { .. } => data.len(),
            };
            data = &data[used..];
            if let State::Body { left: 0, response } = self.state {
                // A response with an empty body completes as soon as its head is read.
                self.state = State::Head;
                on_response(response);
            }
        }
        Ok(())
    }

    /// The connection ended: completes a response whose body runs to the end, if any.
    pub fn finish(&mut self) -> Option<Response> {
        match std::mem::replace(&mut self.state, State::Head) {
            State::UntilClose { response } => Some(response),
            _ => None,
        }
    }

    /// Reads a header block from `data` (after any part kept from earlier reads); returns
    /// the bytes of `data` used.
    fn read_head(&mut self, data: &[u8]) -> Result<usize, ResponseError> {
        let kept = self.head.len();
        let parsed = if kept == 0 {
            parse_head(data, self.bodiless)?
        } else {
            self.head.extend_from_slice(data);
            parse_head(&self.head, self.bodiless)?
        };
        match parsed {
            Some((len, next)) => {
                self.head.clear();
                self.state = next;
                Ok(len - kept)
            }
            None => {
                if kept == 0 {
                    self.head.extend_from_slice(data);
                }
                if self.head.len() > MAX_HEAD {
                    return Err(ResponseError::HeadTooLarge);
                }
                Ok(data.len())
            }
        }
    }
}

/// Parses a complete header block at the start of `buf`: its length and the body state it
/// leads to, or `None` when more bytes are needed. Interim (1xx) responses other than 101
/// lead back to `State::Head`; with `bodiless` (answers to HEAD) a final response has no body.
fn parse_head(buf: &[u8], bodiless: bool) -> Result<Option<(usize, State)>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Head(e.to_string())),
    };
    let status = parsed.code.unwrap_or(0);
    let version = parsed.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == 0;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| ResponseError::Framing("Content-Length"))?;
            let n: u64 = text
                .trim()
                .parse()
                .map_err(|_| ResponseError::Framing("Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::Framing("conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|b| *b == b',')
                .next_back()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    close = false;
                }
            }
        }
    }
    let response = Response { status, close };
    let state = if (100..200).contains(&status) && status != 101 {
        State::Head
    } else if bodiless || status == 204 || status == 304 || (100..200).contains(&status) {
        State::Body { left: 0, response }
    } else if chunked {
        State::Chunked {
            chunk: Chunk::Size { size: 0, seen: false },
            response,
        }
    } else if let Some(left) = length {
        State::Body { left, response }
    } else {
        State::UntilClose { response }
    };
    Ok(Some((len, state)))
}

/// Advances the chunked-body machine over `data`: the bytes used and the next state, or
/// `None` when the body (with its trailers) is complete.
fn read_chunked(mut chunk: Chunk, data: &[u8]) -> Result<(usize, Option<Chunk>), ResponseError> {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        chunk = match chunk {
            Chunk::Data(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - i);
                i += n;
                let left = left - n as u64;
                chunk = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            Chunk::Size { size, seen } => match (b as char).to_digit(16) {
                Some(d) => {
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(ResponseError::Framing("chunk size overflow"))?;
                    Chunk::Size { size, seen: true }
                }
                None if !seen => return Err(ResponseError::Framing("chunk size")),
                None if b == b'\r' => Chunk::SizeLf { size },
                None if b == b';' || b == b' ' || b == b'\t' => Chunk::Extension { size },
                None => return Err(ResponseError::Framing("chunk size")),
            },
            Chunk::Extension { size } => {
                if b == b'\r' {
                    Chunk::SizeLf { size }
                } else {
                    Chunk::Extension { size }
                }
            }
            Chunk::SizeLf { size } => match (b, size) {
                (b'\n', 0) => Chunk::Trailer { len: 0 },
                (b'\n', size) => Chunk::Data(size),
                _ => return Err(ResponseError::Framing("chunk size line")),
            },
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, seen: false },
            Chunk::DataCr | Chunk::DataLf => return Err(ResponseError::Framing("chunk data end")),
            Chunk::Trailer { len } => {
                if b == b'\r' {
                    Chunk::TrailerLf { len }
                } else if len >= MAX_HEAD {
                    return Err(ResponseError::HeadTooLarge);
                } else {
                    Chunk::Trailer { len: len + 1 }
                }
            }
            Chunk::TrailerLf { len } => match (b, len) {
                (b'\n', 0) => return Ok((i + 1, None)),
                (b'\n', _) => Chunk::Trailer { len: 0 },
                _ => return Err(ResponseError::Framing("trailer line")),
            },
        };
        i += 1;
    }
    Ok((i, Some(chunk)))
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
        assert_eq!(result, Err(ResponseError::HeadTooLarge));
    }
}
