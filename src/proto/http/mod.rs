//! HTTP/1.1, free of I/O, for services and for clients.
//!
//! A service: [`RequestDecoder`] cuts a connection's bytes into whole [`Request`]s (bodies
//! included, within [`HttpLimits`]), and [`ResponseEncoder`] writes [`Response`]s (or their
//! heads, before a body streamed with [`Response::stream`]). Give them
//! to [`Framed`](crate::codec::Framed) and [`Answered`](crate::codec::Answered) (or a
//! [`FrameHandler`](crate::codec::FrameHandler) of your own): `examples/http_api.rs` is a
//! whole service. A request that cannot be decoded is an [`HttpError`], whose
//! [`status`](HttpError::status) (400, 413, 431, 501, 505) and
//! [`response`](HttpError::response) are the answer to write before closing.
//!
//! A client: [`RequestEncoder`] writes [`Request`]s (built with [`Request::get`],
//! [`Request::new`], `with_header`, `with_body`), and [`ResponseDecoder`] cuts the answers
//! into whole [`ClientResponse`]s (interim ones skipped; `HEAD`, 204 and 304 answers without
//! a body; `Content-Length`, chunked, or up to the connection's close), or refuses them with
//! a [`BadResponse`]. `examples/http_client.rs` calls an upstream with
//! [`connect_tcp`](crate::connect_tcp).
//!
//! - `head`: the one request-head parser and the one response-head parser (httparse), with
//!   the framing rules;
//! - `body`: `Content-Length`, chunked and close-delimited bodies, read as they arrive (the
//!   one chunked parser);
//! - `request`, `decoder`, `limits`, `error`: the request decoder and what it yields or
//!   refuses;
//! - `response`, `date`: the response, its encoder and the cached `Date`; `stream`: a
//!   response whose body is written as it is made ([`Response::stream`], [`BodyWriter`]);
//! - `client`, `request_encoder`: the response decoder and the request encoder.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod date;
mod decoder;
mod error;
pub(crate) mod head;
mod limits;
mod request;
mod request_encoder;
mod response;
mod stream;

pub use client::{ClientResponse, ResponseDecoder};
pub use decoder::RequestDecoder;
pub use error::{BadRequest, BadResponse, HttpError};
pub use limits::HttpLimits;
pub use request::{Method, Request, Version};
pub use request_encoder::{RequestEncoder, RequestError};
pub use response::{CONTINUE, Response, ResponseEncoder, ResponseError, reason};
pub use stream::{BodyWriter, StreamError};
