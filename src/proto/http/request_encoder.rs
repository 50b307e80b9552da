//! Writes a client's [`Request`]s.

use super::client::SentQueue;
use super::request::{Method, Request, Version};
use super::response::{is_field_value, is_token};
use crate::proto::codec::Encoder;

/// Why a [`Request`] could not be encoded (nothing of it is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A method that is not a token (empty, or with spaces or separators).
    #[error("method {0:?} is not a token")]
    InvalidMethod(String),
    /// A target that is empty or has a space or control byte (it would split the request
    /// line).
    #[error("target {0:?} is empty or has bytes a request line cannot carry")]
    InvalidTarget(String),
    /// A header name that is not a token, or a value with a CR, LF or other control byte
    /// (it would split the request).
    #[error("header {0:?} has bytes a request cannot carry")]
    InvalidHeader(String),
    /// A header the encoder writes itself: `Content-Length`, `Transfer-Encoding`.
    #[error("header {0} is written by the encoder; do not add it")]
    ReservedHeader(String),
    /// An HTTP/1.1 request without a `Host` header, which RFC 9112 requires (the server's
    /// `name[:port]`; servers refuse the request without it).
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one `Host` header.
    #[error("more than one Host")]
    DuplicateHost,
}

/// Writes [`Request`]s for a client: the request line, the headers as given, then
/// `Content-Length` (when there is a body, or the method is `POST`, `PUT` or `PATCH`) and
/// the body. An [`Encoder`] for [`Transport::write_frame`](crate::Transport::write_frame).
///
/// Take it from the connection's [`ResponseDecoder`](super::ResponseDecoder)
/// ([`request_encoder`](super::ResponseDecoder::request_encoder)): it tells the decoder
/// which requests were `HEAD`s, so that their answers are read without a body. One made
/// with `default()` tells no one.
#[derive(Debug, Clone, Default)]
pub struct RequestEncoder {
    sent: Option<SentQueue>,
}

impl RequestEncoder {
    /// An encoder that tells `sent` of each request it writes.
    pub(crate) fn telling(sent: SentQueue) -> Self {
        Self { sent: Some(sent) }
    }

    fn encode_ref(&mut self, r: &Request, dst: &mut Vec<u8>) -> Result<(), RequestError> {
        check(r)?;
        let version = match r.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        };
        for part in [r.method.as_str(), " ", &r.path, " ", version, "\r\n"] {
            dst.extend_from_slice(part.as_bytes());
        }
        for (name, value) in &r.headers {
            for part in [name.as_bytes(), b": ", value, b"\r\n"] {
                dst.extend_from_slice(part);
            }
        }
        let expects_body = matches!(r.method, Method::Post | Method::Put | Method::Patch);
        if !r.body.is_empty() || expects_body {
            dst.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
        }
        dst.extend_from_slice(b"\r\n");
        dst.extend_from_slice(&r.body);
        if let Some(sent) = &self.sent {
            sent.push(&r.method);
        }
        Ok(())
    }
}

impl Encoder<Request> for RequestEncoder {
    type Error = RequestError;

    fn encode(&mut self, request: Request, dst: &mut Vec<u8>) -> Result<(), RequestError> {
        self.encode_ref(&request, dst)
    }
}

impl Encoder<&Request> for RequestEncoder {
    type Error = RequestError;

    fn encode(&mut self, request: &Request, dst: &mut Vec<u8>) -> Result<(), RequestError> {
        self.encode_ref(request, dst)
    }
}

/// Refuses a request that cannot be written as it is.
fn check(r: &Request) -> Result<(), RequestError> {
    if !is_token(r.method.as_str()) {
        return Err(RequestError::InvalidMethod(r.method.to_string()));
    }
    if r.path.is_empty() || !r.path.bytes().all(|b| b > b' ' && b != 0x7f) {
        return Err(RequestError::InvalidTarget(r.path.clone()));
    }
    let mut hosts = 0;
    for (name, value) in &r.headers {
        if !is_token(name) || !is_field_value(value) {
            return Err(RequestError::InvalidHeader(format!(
                "{name}: {}",
                String::from_utf8_lossy(value)
            )));
        }
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::ReservedHeader(name.clone()));
        }
        hosts += usize::from(name.eq_ignore_ascii_case("host"));
    }
    match hosts {
        0 if r.version == Version::Http11 => Err(RequestError::MissingHost),
        0 | 1 => Ok(()),
        _ => Err(RequestError::DuplicateHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codec::{Decoder, InBuf};
    use crate::proto::http::RequestDecoder;

    fn encode(r: Request) -> Result<String, RequestError> {
        let mut out = Vec::new();
        RequestEncoder::default().encode(r, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn request_line_headers_length_and_body_read_back_by_the_server_decoder() {
        let get = encode(Request::get("/a?b=1").with_header("Host", "h:80")).unwrap_or_default();
        assert_eq!(get, "GET /a?b=1 HTTP/1.1\r\nHost: h:80\r\n\r\n");
        let post = Request::new(Method::Post, "/p")
            .with_header("Host", "h")
            .with_header("X-A", "b")
            .with_body("body");
        assert_eq!(
            encode(post.clone()).unwrap_or_default(),
            "POST /p HTTP/1.1\r\nHost: h\r\nX-A: b\r\nContent-Length: 4\r\n\r\nbody"
        );
        let empty_put = Request::new(Method::Put, "/p").with_header("Host", "h");
        assert!(
            encode(empty_put)
                .unwrap_or_default()
                .contains("Content-Length: 0\r\n")
        );
        let mut old = Request::get("/");
        old.version = Version::Http10;
        assert_eq!(encode(old).unwrap_or_default(), "GET / HTTP/1.0\r\n\r\n");
        // The server's decoder reads back what was written.
        let mut out = Vec::new();
        let _ = RequestEncoder::default().encode(&post, &mut out);
        let decoded = RequestDecoder::default().decode(&mut InBuf::borrowed(&out));
        assert_eq!(decoded, Ok(Some(post.with_header("Content-Length", "4"))));
    }

    #[test]
    fn what_would_split_or_reframe_a_request_is_refused() {
        let host = |r: Request| r.with_header("Host", "h");
        let cases = [
            (
                host(Request::new(Method::Other("BAD METHOD".into()), "/")),
                "method",
            ),
            (host(Request::new(Method::Other(String::new()), "/")), "method"),
            (host(Request::get("/a b")), "target"),
            (host(Request::get("")), "target"),
            (host(Request::get("/\r\nX: y")), "target"),
            (
                host(Request::get("/")).with_header("X", "a\r\nInjected: 1"),
                "header",
            ),
            (host(Request::get("/")).with_header("Bad Name", "v"), "header"),
            (
                host(Request::get("/")).with_header("content-length", "3"),
                "reserved",
            ),
            (
                host(Request::get("/")).with_header("Transfer-Encoding", "chunked"),
                "reserved",
            ),
            (Request::get("/"), "host"),
            (host(host(Request::get("/"))), "hosts"),
        ];
        for (r, what) in cases {
            let got = encode(r.clone());
            let ok = matches!(
                (what, &got),
                ("method", Err(RequestError::InvalidMethod(_)))
                    | ("target", Err(RequestError::InvalidTarget(_)))
                    | ("header", Err(RequestError::InvalidHeader(_)))
                    | ("reserved", Err(RequestError::ReservedHeader(_)))
                    | ("host", Err(RequestError::MissingHost))
                    | ("hosts", Err(RequestError::DuplicateHost))
            );
            assert!(ok, "{r:?}: {got:?}");
        }
    }
}
