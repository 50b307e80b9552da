//! Why a request was refused, and the status that answers it.

use super::body::BodyError;
use super::limits::HttpLimits;
use super::response::Response;

/// Why bytes could not be decoded as an HTTP/1.x request: each maps to the status to answer
/// with ([`status`](Self::status)), after which the connection should close (the rest of
/// the stream cannot be trusted to be framed as the client meant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not a well-formed request; answer 400 and close.
    #[error("bad request: {0}")]
    BadRequest(BadRequest),
    /// The request head (request line and headers, or a chunked body's trailers) passed
    /// [`HttpLimits::max_head`](super::HttpLimits::max_head) bytes or
    /// [`max_headers`](super::HttpLimits::max_headers) headers; answer 431 and close, or
    /// raise the limit if such requests are expected.
    #[error("request head over {max_head} bytes or {max_headers} headers")]
    HeadTooLarge {
        /// The byte limit.
        max_head: usize,
        /// The header count limit.
        max_headers: usize,
    },
    /// The body is announced or found to be over
    /// [`HttpLimits::max_body`](super::HttpLimits::max_body); answer 413 and close, or
    /// raise the limit.
    #[error("request body over {max_body} bytes")]
    BodyTooLarge {
        /// The limit.
        max_body: u64,
    },
    /// A `Transfer-Encoding` other than `chunked` alone (`gzip, chunked`): the body cannot be
    /// read; answer 501 and close.
    #[error("transfer coding not supported (only chunked is)")]
    UnsupportedTransferEncoding,
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1; answer 505 and close.
    #[error("HTTP version not supported (only 1.0 and 1.1 are)")]
    UnsupportedVersion,
}

/// What made a request malformed (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// The request line or a header line is not HTTP/1.x syntax.
    #[error("malformed request line or header")]
    Syntax,
    /// A header line folded onto the next (obs-fold, a line starting with a space or tab),
    /// which RFC 9112 lets a server refuse: the client must send it on one line.
    #[error("folded header line (obs-fold)")]
    ObsFold,
    /// A `Content-Length` that is not a decimal number of bytes.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// More than one `Content-Length` header: which one frames the body is ambiguous.
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: the framing is ambiguous, the shape of
    /// request smuggling.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// A `Transfer-Encoding` whose last coding is not `chunked`: where the body ends cannot
    /// be known.
    #[error("Transfer-Encoding does not end with chunked")]
    ChunkedNotFinal,
    /// `chunked` applied more than once, which a sender must not do.
    #[error("Transfer-Encoding names chunked more than once")]
    ChunkedTwice,
    /// A `Transfer-Encoding` in an HTTP/1.0 request, which cannot have one.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// An HTTP/1.1 request without a `Host` header, which RFC 9112 requires (send
    /// `Host: name[:port]` of the server, or an empty one when it has no name).
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one `Host` header: which authority the request is for is ambiguous.
    #[error("more than one Host")]
    DuplicateHost,
    /// A chunked body whose chunk-size line, chunk end or trailer is malformed.
    #[error("malformed chunked body")]
    InvalidChunk,
}

impl HttpError {
    /// The status code that answers this error: 400, 431, 413, 501 or 505.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::HeadTooLarge { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::UnsupportedTransferEncoding => 501,
            Self::UnsupportedVersion => 505,
        }
    }

    /// The answer to this error: its status, the error as a plain-text body, and
    /// `Connection: close`. Write it, then close the connection.
    pub fn response(&self) -> Response {
        Response::new(self.status())
            .with_header("Content-Type", "text/plain")
            .with_body(format!("{self}\n"))
            .close()
    }
}

impl HttpError {
    /// A request body's error, with the limit it passed.
    pub(crate) fn from_body(error: BodyError, limits: &HttpLimits) -> Self {
        match error {
            BodyError::InvalidChunk => BadRequest::InvalidChunk.into(),
            BodyError::TooLarge => Self::BodyTooLarge {
                max_body: limits.max_body,
            },
            BodyError::TrailersTooLarge => Self::HeadTooLarge {
                max_head: limits.max_head,
                max_headers: limits.max_headers,
            },
        }
    }
}

impl From<BadRequest> for HttpError {
    fn from(reason: BadRequest) -> Self {
        Self::BadRequest(reason)
    }
}

/// Why bytes could not be decoded as HTTP/1.x responses
/// ([`ResponseDecoder`](super::ResponseDecoder)). The rest of the connection cannot be
/// trusted to be framed as the server meant: close it (abort it, rather, so that whoever
/// waits on it hears at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// The status line or a header line is not HTTP/1.0 or 1.1 syntax (a folded header
    /// line, a status under 100, another version).
    #[error("malformed status line or header (HTTP/1.0 and 1.1 only)")]
    Syntax,
    /// The response head (status line and headers, or a chunked body's trailers) passed
    /// [`HttpLimits::max_head`](super::HttpLimits::max_head) bytes or
    /// [`max_headers`](super::HttpLimits::max_headers) headers.
    #[error("response head over {max_head} bytes or {max_headers} headers")]
    HeadTooLarge {
        /// The byte limit.
        max_head: usize,
        /// The header count limit.
        max_headers: usize,
    },
    /// The body is announced or found to be over
    /// [`HttpLimits::max_body`](super::HttpLimits::max_body).
    #[error("response body over {max_body} bytes")]
    BodyTooLarge {
        /// The limit.
        max_body: u64,
    },
    /// A `Content-Length` that is not a decimal number of bytes.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// `Content-Length`s that disagree (the same one repeated is accepted).
    #[error("Content-Length values that disagree")]
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: the framing is ambiguous, the shape of
    /// response splitting (RFC 9112, 6.3, says to treat it as an error).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// `chunked` applied more than once, which a sender must not do.
    #[error("Transfer-Encoding names chunked more than once")]
    ChunkedTwice,
    /// A chunked body whose chunk-size line, chunk end or trailer is malformed.
    #[error("malformed chunked body")]
    InvalidChunk,
    /// The connection ended in the middle of a response (its head, or a body framed by
    /// `Content-Length` or chunks).
    #[error("connection closed in the middle of a response")]
    Truncated,
    /// Bytes after a `101 Switching Protocols`, or a 2xx answer to `CONNECT`: the
    /// connection no longer speaks HTTP/1.x, and the decoder reads no more of it.
    #[error("bytes after the connection left HTTP (101 or CONNECT)")]
    AfterSwitch,
}

impl BadResponse {
    /// A response body's error, with the limit it passed.
    pub(crate) fn from_body(error: BodyError, limits: &HttpLimits) -> Self {
        match error {
            BodyError::InvalidChunk => Self::InvalidChunk,
            BodyError::TooLarge => Self::BodyTooLarge {
                max_body: limits.max_body,
            },
            BodyError::TrailersTooLarge => Self::HeadTooLarge {
                max_head: limits.max_head,
                max_headers: limits.max_headers,
            },
        }
    }
}
