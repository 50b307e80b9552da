//! A minimal HTTP/1.1 server: the TechEmpower plaintext response.
//!
//! `GET /` (or `HEAD /`) answers `200 Hello, World!` with Content-Length, Content-Type, Date
//! and Server headers; other paths get 404, other methods 405. Keep-alive and pipelining
//! (responses in request order) are supported; HTTP/1.0 closes after the response unless the
//! client asked for keep-alive. Bad input is answered and the connection closed: a malformed
//! request gets 400, a header block over [`MAX_HEAD`] 431, an unknown HTTP version 505, a
//! chunked request body 501. Buffered input is bounded by [`MAX_HEAD`], so a flood without
//! CRLF cannot grow memory. A request head must arrive whole within the header timeout
//! (default [`HEADER_TIMEOUT`]) of its first byte, or the client gets 408 and is closed: a
//! slowloris client cannot hold a connection by trickling bytes.
//!
//! Framed: [`RequestDecoder`] cuts the byte stream into request heads ([`RequestHead`]),
//! skipping request bodies, and [`Http`] is the [`FrameHandler`] that answers them, served
//! through [`Framed`] ([`Http::factory`], [`Http::framed`]).
//!
//! Every response's service time goes to the [`REQUEST_DURATION`] latency metric.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::addr::Address;
use crate::metrics::{LatencyMetric, Stopwatch};
use crate::proto::codec::{Decoder, FrameHandler, Framed, InBuf};
use crate::proto::protocol::{FnFactory, factory_fn};
use crate::proto::transport::Transport;

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// Capacity an emptied input buffer may keep: a request split across reads costs no
/// allocation.
const RETAIN: usize = 4096;
const BODY: &[u8] = b"Hello, World!";
/// Default time a request head may take to arrive, from its first byte.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Service time of each request: from the start of the read that completed it to its
/// response being queued (`weft_http_request_duration_seconds`).
pub static REQUEST_DURATION: LatencyMetric = LatencyMetric::new(
    "http_request_duration",
    "HTTP service time: from the read that completed a request to its response being queued.",
);

/// The request methods this server tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: answered without a body.
    Head,
    /// Any other method (405).
    Other,
}

/// A request head, as much of it as this server looks at: a frame of [`RequestDecoder`].
/// It borrows nothing and allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The path, without its query or fragment, is `/`.
    pub root: bool,
    /// The request is HTTP/1.0 (otherwise HTTP/1.1).
    pub http10: bool,
    /// The client lets the connection stay open: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive` (the last such token wins).
    pub keep_alive: bool,
    /// The body's `Content-Length` (0 without one); the decoder skips the body.
    pub body_len: u64,
}

/// Why a request head was refused: each has its answer, and the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a well-formed request head, or an invalid or conflicting `Content-Length` (400).
    #[error("malformed request head")]
    Malformed,
    /// A head over [`MAX_HEAD`] bytes, or with too many headers (431).
    #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1 (505).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// A `Transfer-Encoding`: chunked bodies are not read (501).
    #[error("request body with a Transfer-Encoding")]
    TransferEncoding,
}

impl HeadError {
    fn status(self) -> Status {
        match self {
            Self::Malformed => Status::BadRequest,
            Self::TooLarge => Status::HeadTooLarge,
            Self::VersionNotSupported => Status::VersionNotSupported,
            Self::TransferEncoding => Status::NotImplemented,
        }
    }
}

/// Cuts a connection's bytes into [`RequestHead`]s, skipping each request's body. Bounded: a
/// head still incomplete after [`MAX_HEAD`] bytes is [`HeadError::TooLarge`] as soon as they
/// are passed, so a flood without CRLF never buffers more than that and one read.
#[derive(Debug, Clone, Default)]
pub struct RequestDecoder {
    /// Body bytes of the last request still to skip.
    body_left: u64,
}

impl RequestDecoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Body bytes of the last request still to skip.
    pub fn body_left(&self) -> u64 {
        self.body_left
    }
}

impl Decoder for RequestDecoder {
    type Frame = RequestHead;
    type Error = HeadError;

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<RequestHead>, HeadError> {
        if self.body_left > 0 {
            let n = self.body_left.min(buf.len() as u64);
            buf.advance(n as usize);
            self.body_left -= n;
            if self.body_left > 0 {
                return Ok(None);
            }
        }
        let input = buf.as_slice();
        if input.is_empty() {
            return Ok(None);
        }
        // Left uninitialized: httparse writes the headers it finds, so a parse does not
        // first clear 64 of them.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let (head, len) = match req.parse_with_uninit_headers(input, &mut headers) {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(HeadError::TooLarge);
            }
            Ok(httparse::Status::Complete(len)) => (summarize(&req)?, len),
            Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
                return Err(HeadError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::Version) => {
                return match version_error(input) {
                    Some(e) => Err(e),
                    None if input.len() > MAX_HEAD => Err(HeadError::TooLarge),
                    None => Ok(None),
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        };
        buf.advance(len);
        self.body_left = head.body_len;
        Ok(Some(head))
    }
}

/// What this server needs of a parsed request head.
fn summarize(req: &httparse::Request<'_, '_>) -> Result<RequestHead, HeadError> {
    let http10 = req.version == Some(0);
    let mut keep_alive = !http10;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(HeadError::Malformed),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::TransferEncoding);
        }
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Ok(RequestHead {
        method,
        root: path == "/",
        http10,
        keep_alive,
        body_len: length.unwrap_or(0),
    })
}

/// The answer to a request line whose version httparse refused: 505 for a well-formed
/// `HTTP/x.y` this server does not speak, 400 for garbage, and `None` while the line is
/// incomplete and its version may still become `HTTP/x.y` (so that the answer does not
/// depend on where the bytes were split).
fn version_error(input: &[u8]) -> Option<HeadError> {
    let (line, complete) = match input.iter().position(|&b| b == b'\n') {
        Some(end) => (&input[..end], true),
        None => (input, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.split(|&b| b == b' ').nth(2).unwrap_or_default();
    let fits = version.len() <= 8
        && version.iter().zip(b"HTTP/0.0").all(|(&b, &pattern)| {
            if pattern == b'0' {
                b.is_ascii_digit()
            } else {
                b == pattern
            }
        });
    match (complete, fits) {
        (true, true) if version.len() == 8 => Some(HeadError::VersionNotSupported),
        (false, true) => None,
        _ => Some(HeadError::Malformed),
    }
}

/// The HTTP reference protocol, a [`FrameHandler`] of [`RequestHead`]s: serve it through
/// [`Framed`] ([`Http::framed`], [`Http::factory`]). One instance per connection.
#[derive(Debug)]
pub struct Http {
    header_timeout: Duration,
    /// A response that closes the connection was sent; ignore further input.
    done: bool,
    /// The engine is draining: close after the current request.
    draining: bool,
    /// Nothing half-read after the last read: no partial head, no body left to skip.
    idle: bool,
    /// Started when the current read delivered its first request.
    watch: Stopwatch,
    /// `watch` was started for the current read.
    timing: bool,
}

impl Default for Http {
    fn default() -> Self {
        Self::with_header_timeout(HEADER_TIMEOUT)
    }
}

impl Http {
    /// The ALPN protocol names this protocol speaks (HTTP/1.x only: a client that picks
    /// `h2` would get no answer it understands).
    pub const ALPN: &'static [&'static str] = &["http/1.1", "http/1.0"];

    /// A protocol instance whose request heads must arrive within `header_timeout`.
    pub fn with_header_timeout(header_timeout: Duration) -> Self {
        Self {
            header_timeout,
            done: false,
            draining: false,
            idle: true,
            watch: Stopwatch::default(),
            timing: false,
        }
    }

    /// This handler with its decoder: the protocol of one connection.
    pub fn framed(self) -> Framed<Self> {
        Framed::new(RequestDecoder::new(), self).retaining(RETAIN)
    }

    /// A factory that serves every peer with `Http` and the default header timeout.
    pub fn factory() -> FnFactory<impl FnMut(&Address) -> Option<Framed<Http>>> {
        Self::factory_with(HEADER_TIMEOUT)
    }

    /// A factory whose protocols use `header_timeout`.
    pub fn factory_with(header_timeout: Duration) -> FnFactory<impl FnMut(&Address) -> Option<Framed<Http>>> {
        factory_fn(move |_| Some(Http::with_header_timeout(header_timeout).framed()))
    }

    /// Starts timing the current read, at its first request.
    fn start_watch(&mut self) {
        if !self.timing {
            self.watch = Stopwatch::start();
            self.timing = true;
        }
    }

    fn respond(&mut self, head: RequestHead, t: &Transport) {
        let keep_alive = head.keep_alive && !self.draining;
        let status = match (head.method, head.root) {
            (Method::Get | Method::Head, true) => Status::Ok,
            (Method::Get | Method::Head, false) => Status::NotFound,
            (Method::Other, _) => Status::MethodNotAllowed,
        };
        write_response(t, status, head.method != Method::Head, keep_alive, head.http10);
        REQUEST_DURATION.record_since(self.watch);
        if !keep_alive {
            self.close(t);
        }
    }

    /// Answers bad input with `status` and closes.
    fn fail(&mut self, t: &Transport, status: Status) {
        write_response(t, status, true, false, false);
        REQUEST_DURATION.record_since(self.watch);
        self.close(t);
    }

    fn close(&mut self, t: &Transport) {
        self.done = true;
        t.lose_connection();
    }
}

impl FrameHandler for Http {
    type Decoder = RequestDecoder;

    fn frame_received(&mut self, head: RequestHead, t: &Transport) {
        if self.done {
            return;
        }
        self.start_watch();
        self.respond(head, t);
    }

    fn decode_failed(&mut self, error: HeadError, t: &Transport) {
        if !self.done {
            self.start_watch();
            self.fail(t, error.status());
        }
    }

    /// Arms the header deadline while a request head is incomplete, clears it otherwise.
    fn read_decoded(&mut self, decoder: &RequestDecoder, buffered: usize, t: &Transport) {
        self.timing = false;
        self.idle = buffered == 0 && decoder.body_left() == 0;
        if self.done || buffered == 0 {
            t.clear_deadline();
        } else if !t.has_deadline() {
            t.set_deadline(self.header_timeout);
        }
    }

    fn deadline_expired(&mut self, t: &Transport) {
        if !self.done {
            // A head that never arrived is not a request served: its 408 is not timed.
            self.watch = Stopwatch::default();
            self.fail(t, Status::RequestTimeout);
        }
    }

    fn drain_requested(&mut self, t: &Transport) {
        self.draining = true;
        if self.idle {
            self.close(t);
        }
    }
}

/// The statuses this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    NotImplemented,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Self::Ok => "200 OK",
            Self::BadRequest => "400 Bad Request",
            Self::RequestTimeout => "408 Request Timeout",
            Self::NotFound => "404 Not Found",
            Self::MethodNotAllowed => "405 Method Not Allowed",
            Self::HeadTooLarge => "431 Request Header Fields Too Large",
            Self::NotImplemented => "501 Not Implemented",
            Self::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    fn body(self) -> &'static [u8] {
        match self {
            Self::Ok => BODY,
            other => other.line().as_bytes(),
        }
    }
}

fn write_response(t: &Transport, status: Status, with_body: bool, keep_alive: bool, http10: bool) {
    RESPONSES.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.refresh();
        if status == Status::Ok && with_body && keep_alive && !http10 {
            // The common case: bytes formatted at most once a second.
            t.write(&cache.hello);
            return;
        }
        let head = format_head(status, &cache.date, keep_alive, http10);
        if with_body {
            t.write_vectored(&[head.as_bytes(), status.body()]);
        } else {
            t.write(head.as_bytes());
        }
    });
}

/// The status line and headers of a response, with its blank line.
fn format_head(status: Status, date: &str, keep_alive: bool, http10: bool) -> String {
    let connection = match (keep_alive, http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {}\r\nServer: weft\r\nDate: {date}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}{allow}\r\n",
        status.line(),
        status.body().len(),
    )
}

thread_local! {
    /// Each shard formats the Date header, and its whole keep-alive `200`, once a second.
    static RESPONSES: RefCell<ResponseCache> = RefCell::new(ResponseCache::default());
}

#[derive(Debug, Default)]
struct ResponseCache {
    secs: u64,
    date: String,
    /// The complete HTTP/1.1 keep-alive `200 Hello, World!` response.
    hello: Vec<u8>,
}

impl ResponseCache {
    fn refresh(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs || self.date.is_empty() {
            self.secs = secs;
            self.date = http_date(secs);
            let mut hello = format_head(Status::Ok, &self.date, true, false).into_bytes();
            hello.extend_from_slice(BODY);
            self.hello = hello;
        }
    }
}

/// Formats Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = crate::civil::civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::protocol::Protocol;

    fn run(chunks: &[&[u8]]) -> (String, Transport) {
        let t = Transport::detached();
        let mut h = Http::default().framed();
        for c in chunks {
            h.data_received(c, &t);
        }
        let out = String::from_utf8_lossy(t.out().chunk()).into_owned();
        (out, t)
    }

    fn statuses(out: &str) -> Vec<&str> {
        out.match_indices("HTTP/1.1 ")
            .map(|(i, _)| &out[i + 9..i + 12])
            .collect()
    }

    #[test]
    fn date_format() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn hello_world_with_headers() {
        let (out, t) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        for h in [
            "Server: weft",
            "Date: ",
            "Content-Type: text/plain",
            "Content-Length: 13",
        ] {
            assert!(out.contains(h), "missing {h}: {out}");
        }
        assert!(out.ends_with("\r\n\r\nHello, World!"));
        assert!(t.is_connected(), "HTTP/1.1 keeps the connection alive");
    }

    #[test]
    fn pipelined_in_order_across_splits() {
        let mut reqs = Vec::new();
        for i in 0..64 {
            let path = if i % 2 == 0 { "/" } else { "/missing" };
            reqs.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        let chunks: Vec<&[u8]> = reqs.chunks(7).collect();
        let (out, _) = run(&chunks);
        let got = statuses(&out);
        assert_eq!(got.len(), 64);
        for (i, s) in got.iter().enumerate() {
            assert_eq!(*s, if i % 2 == 0 { "200" } else { "404" });
        }
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (out, t) = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert!(out.contains("Connection: close"));
        assert!(!t.is_connected());
        let (out, t) = run(&[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"]);
        assert!(out.contains("Connection: keep-alive"));
        assert!(t.is_connected());
        let (_, t) = run(&[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"]);
        assert!(!t.is_connected());
    }

    #[test]
    fn bad_input_statuses() {
        let cases: [(&[u8], &str); 7] = [
            (b"GARBAGE\r\n\r\n", "400"),
            (b"NOT HTTP AT ALL\r\n\r\n", "400"),
            (b"GET / HTTP/2.0\r\n\r\n", "505"),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405"),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "400"),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "400",
            ),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "501"),
        ];
        for (input, want) in cases {
            let (out, _) = run(&[input]);
            assert_eq!(statuses(&out)[0], want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn oversized_head_is_431_and_bounded() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let (out, t) = run(&[&big]);
        assert_eq!(statuses(&out), vec!["431"]);
        assert!(!t.is_connected());
        // A flood with no CRLF, fed in small pieces, never buffers past the bound.
        let t = Transport::detached();
        let mut h = Http::default().framed();
        for _ in 0..100 {
            h.data_received(&[b'x'; 1000], &t);
            assert!(h.buffered() <= MAX_HEAD + 1000);
        }
        assert_eq!(statuses(&String::from_utf8_lossy(t.out().chunk())), vec!["431"]);
    }

    #[test]
    fn body_is_skipped_and_head_has_no_body() {
        let (out, _) = run(&[
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            b"cdeGET / HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(statuses(&out), vec!["405", "200"]);
        let (out, _) = run(&[b"HEAD / HTTP/1.1\r\n\r\n"]);
        assert!(out.contains("Content-Length: 13") && !out.contains("Hello"));
    }

    #[test]
    fn header_deadline_is_armed_while_a_head_is_incomplete() {
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.data_received(b"GET / HT", &t);
        assert!(t.has_deadline());
        h.data_received(b"TP/1.1\r\n\r\n", &t);
        assert!(!t.has_deadline(), "a complete head clears it");
        h.data_received(b"G", &t);
        assert!(t.has_deadline());
        h.deadline_expired(&t);
        let out = String::from_utf8_lossy(t.out().chunk()).into_owned();
        assert_eq!(statuses(&out), vec!["200", "408"]);
        assert!(!t.is_connected());
    }

    #[test]
    fn drain_closes_idle_and_finishes_in_flight() {
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.drain_requested(&t);
        assert!(!t.is_connected(), "idle keep-alive connection closes at once");
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.data_received(b"GET / HTTP/1.1\r\n", &t);
        h.drain_requested(&t);
        assert!(t.is_connected());
        h.data_received(b"\r\n", &t);
        let out = String::from_utf8_lossy(t.out().chunk()).into_owned();
        assert!(out.contains("200 OK") && out.contains("Connection: close"));
        assert!(!t.is_connected());
    }

    #[test]
    fn records_service_time_per_response() {
        crate::metrics::install_recorder();
        run(&[b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n", b"\r\nBAD\r\n\r\n"]);
        let taken = crate::metrics::take_interval();
        crate::metrics::uninstall_recorder();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].name, "http_request_duration");
        assert_eq!(taken[0].histogram.len(), 3, "200, 404 and 400 are each timed");
    }

    /// Feeds `chunks` to a decoder; returns the heads, then the error or the bytes left.
    fn decode_chunks(chunks: &[&[u8]]) -> (Vec<RequestHead>, Result<Vec<u8>, HeadError>) {
        let mut d = RequestDecoder::new();
        let mut buf = InBuf::new();
        let mut heads = Vec::new();
        for chunk in chunks {
            buf.extend(chunk);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(head)) => heads.push(head),
                    Ok(None) => break,
                    Err(e) => return (heads, Err(e)),
                }
            }
            assert!(buf.len() <= MAX_HEAD + chunk.len(), "bounded");
        }
        (heads, Ok(buf.as_slice().to_vec()))
    }

    fn head(method: Method, root: bool, http10: bool, keep_alive: bool, body_len: u64) -> RequestHead {
        RequestHead {
            method,
            root,
            http10,
            keep_alive,
            body_len,
        }
    }

    /// Input, the heads it holds, then the error or the bytes left undecoded.
    type DecodeCase = (&'static [u8], Vec<RequestHead>, Result<&'static [u8], HeadError>);

    fn decode_cases() -> Vec<DecodeCase> {
        use HeadError::*;
        use Method::*;
        let get = head(Get, true, false, true, 0);
        vec![
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", vec![get], Ok(b"")),
            (b"GET / HTTP/1.1\n\n", vec![get], Ok(b"")),
            (
                b"GET /a?x HTTP/1.1\r\n\r\nHEAD /?q#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HT",
                vec![head(Get, false, false, true, 0), head(Head, true, true, true, 0)],
                Ok(b"GET / HT"),
            ),
            (
                b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n\r\n",
                vec![head(Other, false, false, true, 5), get],
                Ok(b""),
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
                vec![head(Other, true, false, true, 10)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.1\r\ncontent-length: 2\r\nContent-Length:  2 \r\n\r\nxy",
                vec![head(Get, true, false, true, 2)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.0\r\n\r\n",
                vec![head(Get, true, true, false, 0)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                vec![head(Get, true, false, false, 0)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: close , keep-alive\r\n\r\n",
                vec![head(Get, true, true, true, 0)],
                Ok(b""),
            ),
            (b"GARBAGE\r\n\r\n", vec![], Err(Malformed)),
            (b"GET / HTTP/1.1\r\n\r\nBAD\r\n\r\n", vec![get], Err(Malformed)),
            (b"GET / HTTP/2.0\r\n\r\n", vec![], Err(VersionNotSupported)),
            (b"GET / HTTP/3.0 x\r\n\r\n", vec![], Err(VersionNotSupported)),
            (b"GET / HTTP/2.x\r\n\r\n", vec![], Err(Malformed)),
            (b"GET / HTTP/22.0\r\n\r\n", vec![], Err(Malformed)),
            (b"GET / HTTX/1.1\r\n\r\n", vec![], Err(Malformed)),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                vec![],
                Err(Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                vec![],
                Err(Malformed),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                vec![],
                Err(TransferEncoding),
            ),
        ]
    }

    #[test]
    fn decoder_cases_at_every_split_point() {
        for (input, want_heads, want_end) in decode_cases() {
            let want_end = want_end.map(<[u8]>::to_vec);
            let name = String::from_utf8_lossy(input);
            assert_eq!(
                decode_chunks(&[input]),
                (want_heads.clone(), want_end.clone()),
                "{name}"
            );
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                let got = decode_chunks(&[a, b]);
                assert_eq!(
                    got,
                    (want_heads.clone(), want_end.clone()),
                    "{name} split at {at}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                decode_chunks(&bytes),
                (want_heads, want_end),
                "{name} byte by byte"
            );
        }
    }

    #[test]
    fn decoder_skips_a_body_across_reads() {
        let mut d = RequestDecoder::new();
        let mut buf = InBuf::new();
        buf.extend(b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().body_len, 6);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!((d.body_left(), buf.len()), (4, 0));
        buf.extend(b"cdefGET");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!((d.body_left(), buf.as_slice()), (0, b"GET".as_slice()));
    }

    /// A head of exactly `len` bytes.
    fn head_of(len: usize) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
        h.resize(len - 4, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    }

    #[test]
    fn decoder_bounds_a_head_at_max_head() {
        let fits = head_of(MAX_HEAD);
        let over = head_of(MAX_HEAD + 1);
        let mut flood = b"GET /".to_vec();
        flood.resize(MAX_HEAD + 1, b'x');
        for at in (0..=MAX_HEAD + 1).step_by(61).chain([MAX_HEAD, MAX_HEAD + 1]) {
            let split = |input: &[u8]| {
                let at = at.min(input.len());
                decode_chunks(&[&input[..at], &input[at..]])
            };
            let (heads, end) = split(&fits);
            assert_eq!((heads.len(), end), (1, Ok(Vec::new())), "split at {at}");
            assert_eq!(split(&over), (vec![], Err(HeadError::TooLarge)), "split at {at}");
            assert_eq!(split(&flood), (vec![], Err(HeadError::TooLarge)), "split at {at}");
        }
        // Just under the bound, a flood still waits for its end.
        assert_eq!(
            decode_chunks(&[&flood[..MAX_HEAD]]),
            (vec![], Ok(flood[..MAX_HEAD].to_vec()))
        );
        // Too many headers.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(decode_chunks(&[&many]), (vec![], Err(HeadError::TooLarge)));
    }

    /// The output without its Date headers (the second may turn between two runs).
    fn dateless(out: &str) -> String {
        out.split("\r\n")
            .filter(|l| !l.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn answers_are_the_same_bytes_at_every_split_point() {
        let input: &[u8] = b"GET / HTTP/1.1\r\n\r\nHEAD /x HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/9.9\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (whole, _) = run(&[input]);
        assert_eq!(statuses(&whole), ["200", "404", "405", "200", "505"]);
        let whole = dateless(&whole);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let (out, t) = run(&[a, b]);
            assert_eq!(dateless(&out), whole, "split at {at}");
            assert!(!t.is_connected());
        }
    }
}
