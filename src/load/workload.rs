//! What a load connection sends and how it knows a response has ended.

use super::exchange::Reader;
use super::matcher::{Framing, Matcher};
use super::replies::ReplyReader;
use super::response::ResponseReader;
use crate::proto::codec::{Decoder, Encoder, InBuf};
use crate::proto::resp::{RespDecoder, RespEncoder, split_args};

/// The longest request description in a report (a longer one is cut).
const MAX_DESCRIPTION: usize = 200;

/// How responses are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// HTTP/1.1 responses (status line, headers, Content-Length or chunked body).
    Http,
    /// HTTP/1.1 responses to HEAD requests: no body, whatever the headers say.
    HttpHead,
    /// Raw responses of a fixed length or ending with a delimiter.
    Raw(Framing),
    /// RESP2 (Redis) replies, one per request.
    Resp,
}

/// Why a workload cannot be built from the options given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkloadError(String);

/// An HTTP/1.1 request for [`Workload::http`]: `GET /` to `localhost` by default.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method (`GET`, `POST`, `HEAD`...).
    pub method: &'a str,
    /// The `Host` header's value (unless `headers` have one).
    pub host: &'a str,
    /// The request target, starting with `/`.
    pub path: &'a str,
    /// Extra headers, `Name: value`.
    pub headers: &'a [String],
    /// The body, sent with its `Content-Length`.
    pub body: &'a [u8],
    /// Says `Connection: close` (unless `headers` name Connection), for one request per
    /// connection.
    pub close: bool,
}

impl Default for HttpRequest<'_> {
    fn default() -> Self {
        Self {
            method: "GET",
            host: "localhost",
            path: "/",
            headers: &[],
            body: &[],
            close: false,
        }
    }
}

/// What [`RandomKeys`] replaces in a request: redis-benchmark's `__rand_int__`.
pub const RANDOM_KEY: &[u8] = b"__rand_int__";

/// Numbers below this many fit the 12 digits that replace a [`RANDOM_KEY`].
pub const MAX_KEYSPACE: u64 = 1_000_000_000_000;

/// Random keys in a request (redis-benchmark's `-r`): where its [`RANDOM_KEY`]s are, and
/// the range of the numbers that replace them, a fresh one in each request sent, written as
/// 12 digits (zero-padded, as redis-benchmark writes them) so that no length changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomKeys {
    offsets: Vec<usize>,
    keyspace: u64,
}

impl RandomKeys {
    /// The [`RANDOM_KEY`]s of `request`, for numbers below `keyspace`.
    ///
    /// # Errors
    ///
    /// `keyspace` is 0 or over [`MAX_KEYSPACE`], or `request` has no `__rand_int__`.
    pub fn find(request: &[u8], keyspace: u64) -> Result<Self, WorkloadError> {
        if keyspace == 0 || keyspace > MAX_KEYSPACE {
            return Err(WorkloadError(format!(
                "--keyspace must be from 1 to {MAX_KEYSPACE} (12 digits), not {keyspace}"
            )));
        }
        let len = RANDOM_KEY.len();
        let mut offsets = Vec::new();
        let mut at = 0;
        while let Some(found) = request
            .get(at..)
            .and_then(|rest| rest.windows(len).position(|w| w == RANDOM_KEY))
        {
            offsets.push(at + found);
            at += found + len;
        }
        if offsets.is_empty() {
            return Err(WorkloadError(
                "--keyspace replaces __rand_int__ in the request, which has none (e.g. \
                 --command \"GET key:__rand_int__\" or --path /item/__rand_int__)"
                    .into(),
            ));
        }
        Ok(Self { offsets, keyspace })
    }

    /// How many numbers there are to pick from.
    pub fn keyspace(&self) -> u64 {
        self.keyspace
    }

    /// Writes a fresh number, drawn from `rng` (xorshift64, never 0), in each placeholder of
    /// `request`, a copy of the request they were found in.
    pub(crate) fn fill(&self, request: &mut [u8], rng: &mut u64) {
        for &at in &self.offsets {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let mut n = *rng % self.keyspace;
            if let Some(digits) = request.get_mut(at..at + RANDOM_KEY.len()) {
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (n % 10) as u8;
                    n /= 10;
                }
            }
        }
    }
}

/// The request every connection sends, over and over, and what answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The request's bytes.
    pub request: Vec<u8>,
    /// How its response ends.
    pub expect: Expect,
}

impl Workload {
    /// Echo: `size` bytes (at least 1) that come back unchanged.
    pub fn echo(size: usize) -> Self {
        let size = size.max(1);
        let request: Vec<u8> = (0..size).map(|i| b"weft-load-"[i % 10]).collect();
        Self {
            expect: Expect::Raw(Framing::Echo(request.clone())),
            request,
        }
    }

    /// A keep-alive `GET path` to `host` with extra `headers` (`Name: value`).
    ///
    /// # Errors
    ///
    /// A path that does not start with `/`, or a header without a colon; a line break in
    /// either.
    pub fn http_get(host: &str, path: &str, headers: &[String]) -> Result<Self, WorkloadError> {
        Self::get(host, path, headers, false)
    }

    /// As [`http_get`](Self::http_get), for one request per connection
    /// ([`LoadConfig::new_conn_per_request`](crate::load::runner::LoadConfig::new_conn_per_request)):
    /// the request says `Connection: close` (unless `headers` name Connection), so the server
    /// closes first, as after `wrk -H "Connection: close"`.
    ///
    /// # Errors
    ///
    /// As [`http_get`](Self::http_get).
    pub fn http_get_once(host: &str, path: &str, headers: &[String]) -> Result<Self, WorkloadError> {
        Self::get(host, path, headers, true)
    }

    /// The GET request of [`http_get`](Self::http_get), saying `Connection: close` if `close`.
    fn get(host: &str, path: &str, headers: &[String], close: bool) -> Result<Self, WorkloadError> {
        Self::http(&HttpRequest {
            host,
            path,
            headers,
            close,
            ..HttpRequest::default()
        })
    }

    /// The HTTP/1.1 request `r` describes, with `Content-Length` for its body.
    ///
    /// # Errors
    ///
    /// A method that is not an HTTP token, a path that does not start with `/`, a header
    /// without a colon, a line break in any of them, or a `Content-Length` or
    /// `Transfer-Encoding` header (the body's length is set from the body).
    pub fn http(r: &HttpRequest<'_>) -> Result<Self, WorkloadError> {
        let (host, path, headers) = (r.host, r.path, r.headers);
        if r.method.is_empty()
            || !r
                .method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(WorkloadError(format!(
                "invalid method {:?}: a word such as GET or POST",
                r.method
            )));
        }
        if r.method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(WorkloadError(format!(
                "methods are case-sensitive: {}, not {}",
                r.method.to_ascii_uppercase(),
                r.method
            )));
        }
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(WorkloadError(format!(
                "invalid path {path:?}: it starts with / and has no spaces"
            )));
        }
        let mut request = format!("{} {path} HTTP/1.1\r\n", r.method);
        let has = |name: &str| {
            headers.iter().any(|h| {
                h.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
        };
        if !has("host") {
            request.push_str(&format!("Host: {host}\r\n"));
        }
        for h in headers {
            let valid = h
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
            if !valid || h.contains(['\r', '\n']) {
                return Err(WorkloadError(format!(
                    "invalid header {h:?}: expected \"Name: value\" on one line"
                )));
            }
            request.push_str(h.trim());
            request.push_str("\r\n");
        }
        if has("content-length") || has("transfer-encoding") {
            return Err(WorkloadError(
                "no Content-Length or Transfer-Encoding header: the body's length is set from the body"
                    .into(),
            ));
        }
        if r.close && !has("connection") {
            request.push_str("Connection: close\r\n");
        }
        if !r.body.is_empty() || !matches!(r.method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            request.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(r.body);
        let expect = if r.method == "HEAD" {
            Expect::HttpHead
        } else {
            Expect::Http
        };
        Ok(Self { request, expect })
    }

    /// An HTTP request given whole (from a file).
    ///
    /// # Errors
    ///
    /// The bytes are not one complete HTTP/1.x request head.
    pub fn http_request(request: Vec<u8>) -> Result<Self, WorkloadError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&request) {
            Ok(httparse::Status::Complete(_)) => {
                let expect = if parsed.method == Some("HEAD") {
                    Expect::HttpHead
                } else {
                    Expect::Http
                };
                Ok(Self { request, expect })
            }
            Ok(httparse::Status::Partial) => Err(WorkloadError(
                "the request file is not a complete HTTP request (it needs a blank line after the headers)"
                    .into(),
            )),
            Err(e) => Err(WorkloadError(format!(
                "the request file is not an HTTP request: {e}"
            ))),
        }
    }

    /// Raw bytes answered by a response framed by `framing`.
    ///
    /// # Errors
    ///
    /// An empty request.
    pub fn raw(request: Vec<u8>, framing: Framing) -> Result<Self, WorkloadError> {
        if request.is_empty() {
            return Err(WorkloadError("the request file is empty".into()));
        }
        Ok(Self {
            request,
            expect: Expect::Raw(framing),
        })
    }

    /// A Redis command, written as redis-cli takes it (`SET key "a value"`: words split at
    /// spaces, quotes and escapes as redis's `sdssplitargs`), sent as RESP2 and answered by
    /// one reply; an error reply counts as an error.
    ///
    /// # Errors
    ///
    /// No command, or unbalanced quotes.
    pub fn redis(command: &str) -> Result<Self, WorkloadError> {
        let args = split_args(command.as_bytes())
            .ok_or_else(|| WorkloadError(format!("invalid command {command:?}: unbalanced quotes")))?;
        if args.is_empty() {
            return Err(WorkloadError(
                "the command is empty: give one, as `GET key`".into(),
            ));
        }
        let mut request = Vec::new();
        let Ok(()) = RespEncoder.encode(args.as_slice(), &mut request);
        Ok(Self {
            request,
            expect: Expect::Resp,
        })
    }

    /// The request in a few words, for reports: an HTTP request's line (`POST /c/a
    /// HTTP/1.1`), a Redis command's words (`SET key value`), else its size.
    pub fn describe(&self) -> String {
        let text = match self.expect {
            Expect::Http | Expect::HttpHead => {
                let line = self.request.split(|&b| b == b'\r' || b == b'\n').next();
                line.map(|l| String::from_utf8_lossy(l).into_owned())
            }
            Expect::Resp => {
                let mut buf = InBuf::borrowed(&self.request);
                match RespDecoder::default().decode(&mut buf) {
                    Ok(Some(args)) => Some(
                        args.iter()
                            .map(|a| String::from_utf8_lossy(a))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    _ => None,
                }
            }
            Expect::Raw(_) => None,
        };
        let mut text = text.unwrap_or_else(|| format!("{} bytes", self.request.len()));
        if text.len() > MAX_DESCRIPTION {
            let mut end = MAX_DESCRIPTION;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        text
    }

    /// A fresh response reader for one connection.
    pub fn reader(&self) -> Reader {
        match &self.expect {
            Expect::Http => Reader::Http(ResponseReader::new()),
            Expect::HttpHead => Reader::Http(ResponseReader::for_head()),
            Expect::Raw(f) => Reader::Raw(Matcher::new(f.clone())),
            Expect::Resp => Reader::Resp(ReplyReader::for_request(&self.request)),
        }
    }

    /// The request repeated `k` times: any prefix of `n` requests is one write.
    pub fn batch(&self, k: usize) -> Vec<u8> {
        self.request.repeat(k.max(1))
    }
}

/// Parses a delimiter given on the command line, with `\r`, `\n`, `\t`, `\0`, `\\` and
/// `\xHH` escapes.
///
/// # Errors
///
/// An unknown escape or an empty result.
pub fn parse_delimiter(s: &str) -> Result<Vec<u8>, WorkloadError> {
    let bad = || {
        WorkloadError(format!(
            "invalid delimiter {s:?}: use text with \\r \\n \\t \\0 \\\\ or \\xHH"
        ))
    };
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next().ok_or_else(bad)? {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b'0' => 0,
            b'\\' => b'\\',
            b'x' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                u8::from_str_radix(hex, 16).map_err(|_| bad())?
            }
            _ => return Err(bad()),
        });
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_commands_split_as_redis_cli_and_encode_as_resp() {
        let w = Workload::redis(r#"SET key "a value\n""#).unwrap();
        assert_eq!(w.request, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$8\r\na value\n\r\n");
        assert_eq!(w.expect, Expect::Resp);
        assert_eq!(w.batch(2), [&w.request[..], &w.request[..]].concat());
        assert!(Workload::redis("  ").unwrap_err().to_string().contains("empty"));
        assert!(
            Workload::redis("GET \"k")
                .unwrap_err()
                .to_string()
                .contains("quotes")
        );
    }

    #[test]
    fn http_requests_with_a_method_and_a_body() {
        let headers = ["Content-Type: text/plain".to_string()];
        let post = HttpRequest {
            method: "POST",
            path: "/c/a",
            headers: &headers,
            body: b"42",
            ..HttpRequest::default()
        };
        let w = Workload::http(&post).unwrap();
        let want = "POST /c/a HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n42";
        assert_eq!(String::from_utf8_lossy(&w.request), want);
        assert_eq!(w.expect, Expect::Http);
        let empty_put = Workload::http(&HttpRequest {
            method: "PUT",
            ..HttpRequest::default()
        })
        .unwrap();
        assert!(String::from_utf8_lossy(&empty_put.request).contains("Content-Length: 0\r\n"));
        let head = Workload::http(&HttpRequest {
            method: "HEAD",
            ..HttpRequest::default()
        })
        .unwrap();
        assert_eq!(head.expect, Expect::HttpHead);
        assert_eq!(
            Workload::http_request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec())
                .unwrap()
                .expect,
            Expect::HttpHead
        );
        assert!(
            Workload::http(&HttpRequest {
                method: "GE T",
                ..HttpRequest::default()
            })
            .is_err()
        );
        let lower = Workload::http(&HttpRequest {
            method: "post",
            ..HttpRequest::default()
        });
        assert!(lower.unwrap_err().to_string().contains("POST, not post"));
        let length = ["Content-Length: 5".to_string()];
        let err = Workload::http(&HttpRequest {
            headers: &length,
            ..post
        })
        .unwrap_err();
        assert!(err.to_string().contains("set from the body"), "{err}");
    }

    #[test]
    fn random_keys_replace_every_placeholder_with_12_digits_in_range() {
        let w = Workload::redis("SET key:__rand_int__ __rand_int__").unwrap();
        let keys = RandomKeys::find(&w.request, 1000).unwrap();
        let mut rng = 0x9E37_79B9_7F4A_7C15;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut request = w.request.clone();
            keys.fill(&mut request, &mut rng);
            let mut buf = InBuf::borrowed(&request);
            let args = RespDecoder::default().decode(&mut buf).unwrap().unwrap();
            let key = String::from_utf8(args[1].clone()).unwrap();
            let number = key.strip_prefix("key:").unwrap();
            assert_eq!(number.len(), 12, "{key}");
            assert!(number.parse::<u64>().unwrap() < 1000, "{key}");
            assert_eq!(args[2].len(), 12);
            seen.insert(number.to_owned());
        }
        assert!(seen.len() > 100, "{} distinct keys", seen.len());
        for (request, keyspace) in [
            (&b"PING"[..], 10),
            (&w.request[..], 0),
            (&w.request[..], MAX_KEYSPACE + 1),
        ] {
            assert!(RandomKeys::find(request, keyspace).is_err());
        }
    }

    #[test]
    fn requests_are_described_in_a_few_words() {
        let post = HttpRequest {
            method: "POST",
            path: "/c/a",
            body: b"1",
            ..HttpRequest::default()
        };
        assert_eq!(Workload::http(&post).unwrap().describe(), "POST /c/a HTTP/1.1");
        assert_eq!(Workload::redis("SET k 'a b'").unwrap().describe(), "SET k a b");
        assert_eq!(Workload::echo(64).describe(), "64 bytes");
        let long = Workload::redis(&format!("SET k {}", "é".repeat(300)))
            .unwrap()
            .describe();
        assert!(
            long.ends_with("...") && long.len() <= MAX_DESCRIPTION + 3,
            "{long}"
        );
    }

    #[test]
    fn http_get_request() {
        let w = Workload::http_get("127.0.0.1:8080", "/x?y=1", &["Accept: */*".into()]).unwrap();
        assert_eq!(
            w.request,
            b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"
        );
        let once = Workload::http_get_once("a", "/", &[]).unwrap();
        assert_eq!(
            once.request,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let keep = Workload::http_get_once("a", "/", &["connection: keep-alive".into()]).unwrap();
        assert_eq!(
            keep.request,
            b"GET / HTTP/1.1\r\nHost: a\r\nconnection: keep-alive\r\n\r\n"
        );
        let custom_host = Workload::http_get("a", "/", &["host: b".into()]).unwrap();
        assert_eq!(custom_host.request, b"GET / HTTP/1.1\r\nhost: b\r\n\r\n");
        assert!(Workload::http_get("a", "x", &[]).is_err());
        assert!(Workload::http_get("a", "/a b", &[]).is_err());
        assert!(Workload::http_get("a", "/", &["NoColon".into()]).is_err());
        assert!(Workload::http_get("a", "/", &["X: a\r\nY: b".into()]).is_err());
        assert!(Workload::http_get("a", "/", &[": empty".into()]).is_err());
    }

    #[test]
    fn request_file_forms() {
        assert!(Workload::http_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()).is_ok());
        assert!(Workload::http_request(b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec()).is_err());
        assert!(Workload::http_request(b"\x00\x01".to_vec()).is_err());
        assert!(Workload::raw(Vec::new(), Framing::Length(1)).is_err());
        let w = Workload::raw(b"PING\r\n".to_vec(), Framing::Delimiter(b"\r\n".to_vec())).unwrap();
        assert_eq!(w.batch(2), b"PING\r\nPING\r\n");
    }

    #[test]
    fn echo_expects_its_own_length() {
        let w = Workload::echo(25);
        assert_eq!(w.request.len(), 25);
        assert_eq!(w.expect, Expect::Raw(Framing::Echo(w.request.clone())));
        assert_eq!(Workload::echo(0).request.len(), 1);
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("\\r\\n").unwrap(), b"\r\n");
        assert_eq!(parse_delimiter("END\\x00").unwrap(), b"END\0");
        assert_eq!(parse_delimiter("a\\\\b\\t").unwrap(), b"a\\b\t");
        for bad in ["", "\\q", "\\x1", "\\xzz", "\\"] {
            assert!(parse_delimiter(bad).is_err(), "{bad}");
        }
    }
}
