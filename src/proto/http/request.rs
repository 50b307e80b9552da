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

    /// The path without its query (`?…`). For an absolute-form target (`http://h/p?q`, which
    /// a server must accept), the path within it (`/p`, or `/` when it has none).
    pub fn path_only(&self) -> &str {
        match self.origin_form().split('?').next() {
            Some("") | None => "/",
            Some(path) => path,
        }
    }

    /// The query, after `?` (empty without one).
    pub fn query(&self) -> &str {
        self.origin_form().split_once('?').map_or("", |(_, q)| q)
    }

    /// The authority the request is for: the one of an absolute-form target
    /// (`GET http://h:8080/p`), which overrides `Host` (RFC 9112, 3.2.2), else the `Host`
    /// header's value; `None` without either, or when it is not UTF-8.
    pub fn host(&self) -> Option<&str> {
        match absolute_form(&self.path) {
            Some((authority, _)) => Some(authority),
            None => std::str::from_utf8(self.header("host")?).ok(),
        }
    }

    /// The target from its path on: the target itself unless it is in absolute form.
    fn origin_form(&self) -> &str {
        absolute_form(&self.path).map_or(&self.path, |(_, rest)| rest)
    }

    /// Whether the client lets the connection stay open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`. Answer a
    /// request that does not with [`Response::close`](super::Response::close).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, self.headers_named("connection"))
    }
}

/// An absolute-form target (`scheme://authority/path?query`) split after its authority:
/// `(authority, "/path?query")`; `None` for any other form.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, after) = target.split_once("://")?;
    let is_scheme = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return None;
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    Some(after.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, host: Option<&str>) -> Request {
        Request {
            method: Method::Get,
            path: target.to_owned(),
            version: Version::Http11,
            headers: host
                .map(|h| ("Host".to_owned(), h.as_bytes().to_vec()))
                .into_iter()
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn targets_in_origin_and_absolute_form_give_the_same_path_query_and_host() {
        for (target, host, path, query, authority) in [
            ("/p/q?x=1", Some("h:80"), "/p/q", "x=1", Some("h:80")),
            ("/", None, "/", "", None),
            (
                "http://a.example:8080/p?x=1&y",
                Some("other"),
                "/p",
                "x=1&y",
                Some("a.example:8080"),
            ),
            ("https://a", None, "/", "", Some("a")),
            ("http://a?x", None, "/", "x", Some("a")),
            ("*", Some("h"), "*", "", Some("h")),
            (
                "/redirect?to=http://b/",
                Some("h"),
                "/redirect",
                "to=http://b/",
                Some("h"),
            ),
            ("1a://x/y", Some("h"), "1a://x/y", "", Some("h")),
        ] {
            let r = request(target, host);
            assert_eq!(
                (r.path_only(), r.query(), r.host()),
                (path, query, authority),
                "{target}"
            );
        }
    }
}
