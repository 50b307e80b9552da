//! HTTP/1.1 for services, free of I/O: [`RequestDecoder`] cuts a connection's bytes into whole
//! [`Request`]s (bodies included, within [`HttpLimits`]), and [`ResponseEncoder`] writes
//! [`Response`]s. Give them to [`Framed`](crate::codec::Framed) and
//! [`Answered`](crate::codec::Answered) (or a [`FrameHandler`](crate::codec::FrameHandler)
//! of your own): `examples/http_api.rs` is a whole service.
//!
//! A request that cannot be decoded is an [`HttpError`], whose
//! [`status`](HttpError::status) (400, 413, 431, 501, 505) and
//! [`response`](HttpError::response) are the answer to write before closing.
//!
//! - `head`: the one request-head parser (httparse), with the framing rules;
//! - `body`: `Content-Length` and chunked bodies, read as they arrive;
//! - `request`, `decoder`, `limits`, `error`: the decoder and what it yields or refuses;
//! - `response`, `date`: the response, its encoder and the cached `Date`.

pub(crate) mod body;
pub(crate) mod date;
mod decoder;
mod error;
pub(crate) mod head;
mod limits;
mod request;
mod response;

pub use decoder::RequestDecoder;
pub use error::{BadRequest, HttpError};
pub use limits::HttpLimits;
pub use request::{Method, Request, Version};
pub use response::{CONTINUE, Response, ResponseEncoder, ResponseError, reason};
