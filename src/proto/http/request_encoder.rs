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
