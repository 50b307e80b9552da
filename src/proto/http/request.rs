//! A whole request: what [`RequestDecoder`](super::RequestDecoder) yields.

use std::fmt;

use super::head::{Head, keep_alive};

/// The HTTP versions a request may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

/// A request method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: answered as `GET` without the body ([`Response::for_head`](super::Response::for_head)).
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `OPTIONS`.
    Options,
    /// Any other method token, as sent (methods are case-sensitive).
    Other(String),
}

impl Method {
    /// The method named by `token`.
    pub fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "PATCH" => Self::Patch,
            "OPTIONS" => Self::Options,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Other(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP/1.x request, whole: head and body (a chunked body joined, its trailers dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent: a path with its query (`/counter/a?x=1`), or a whole
    /// URI, `*` or an authority for the methods that use those.
    pub path: String,
    /// The version.
    pub version: Version,
    /// The headers in order, names as sent; [`header`](Self::header) looks one up.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (empty without one).
    pub body: Vec<u8>,
}

impl Request {
    /// The request a parsed head starts, its body still to come.
    pub(crate) fn from_head(head: &Head<'_, '_>) -> Self {
        Self {
            method: Method::from_token(head.method),
            path: head.path.to_owned(),
            version: head.version,
            headers: head
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
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

    /// The path without its query (`?…`).
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// The query, after `?` (empty without one).
    pub fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }

    /// Whether the client lets the connection stay open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`. Answer a
    /// request that does not with [`Response::close`](super::Response::close).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, self.headers_named("connection"))
    }
}
