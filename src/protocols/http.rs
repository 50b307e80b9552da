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
//! Every response's service time goes to the [`REQUEST_DURATION`] latency metric.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::addr::Address;
use crate::metrics::{LatencyMetric, Stopwatch};
use crate::proto::protocol::{FnFactory, Protocol, factory_fn};
use crate::proto::transport::Transport;

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// Capacity an emptied input buffer may keep.
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

/// The HTTP reference protocol. One instance per connection.
#[derive(Debug)]
pub struct Http {
    header_timeout: Duration,
    /// Bytes of an incomplete request head.
    pending: Vec<u8>,
    /// Request-body bytes still to skip.
    body_left: u64,
    /// A response that closes the connection was sent; ignore further input.
    done: bool,
    /// The engine is draining: close after the current request.
    draining: bool,
    /// Started when the current read arrived.
    watch: Stopwatch,
}

impl Default for Http {
    fn default() -> Self {
        Self::with_header_timeout(HEADER_TIMEOUT)
    }
}

impl Http {
    /// A protocol instance whose request heads must arrive within `header_timeout`.
    pub fn with_header_timeout(header_timeout: Duration) -> Self {
        Self {
            header_timeout,
            pending: Vec::new(),
            body_left: 0,
            done: false,
            draining: false,
            watch: Stopwatch::default(),
        }
    }

    /// A factory that serves every peer with `Http` and the default header timeout.
    pub fn factory() -> FnFactory<impl FnMut(&Address) -> Option<Http>> {
        Self::factory_with(HEADER_TIMEOUT)
    }

    /// A factory whose protocols use `header_timeout`.
    pub fn factory_with(header_timeout: Duration) -> FnFactory<impl FnMut(&Address) -> Option<Http>> {
        factory_fn(move |_| Some(Http::with_header_timeout(header_timeout)))
    }

    /// Arms the header deadline while a request head is incomplete, clears it otherwise.
    fn watch_head(&self, t: &Transport) {
        if self.done || self.pending.is_empty() {
            t.clear_deadline();
        } else if !t.has_deadline() {
            t.set_deadline(self.header_timeout);
        }
    }

    /// Parses and answers every complete request in `input`; returns the bytes consumed.
    fn process(&mut self, input: &[u8], t: &Transport) -> usize {
        let mut pos = 0;
        while !self.done {
            if self.body_left > 0 {
                let n = self.body_left.min((input.len() - pos) as u64);
                pos += n as usize;
                self.body_left -= n;
                if self.body_left > 0 {
                    break;
                }
            }
            if pos == input.len() {
                break;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&input[pos..]) {
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => self.fail(t, Status::HeadTooLarge),
                Ok(httparse::Status::Complete(len)) => {
                    pos += len;
                    self.respond(&req, t);
                }
                Ok(httparse::Status::Partial) => {
                    if input.len() - pos > MAX_HEAD {
                        self.fail(t, Status::HeadTooLarge);
                    }
                    break;
                }
                Err(httparse::Error::Version) if names_http_version(&input[pos..]) => {
                    self.fail(t, Status::VersionNotSupported)
                }
                Err(httparse::Error::TooManyHeaders) => self.fail(t, Status::HeadTooLarge),
                Err(_) => self.fail(t, Status::BadRequest),
            }
        }
        if self.done { input.len() } else { pos }
    }

    fn respond(&mut self, req: &httparse::Request<'_, '_>, t: &Transport) {
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
                    _ => return self.fail(t, Status::BadRequest),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return self.fail(t, Status::NotImplemented);
            }
        }
        self.body_left = length.unwrap_or(0);
        let keep_alive = keep_alive && !self.draining;
        let method = req.method.unwrap_or("");
        let path = req.path.unwrap_or("");
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let status = match (method, path) {
            ("GET" | "HEAD", "/") => Status::Ok,
            ("GET" | "HEAD", _) => Status::NotFound,
            _ => Status::MethodNotAllowed,
        };
        write_response(t, status, method != "HEAD", keep_alive, http10);
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
        self.pending = Vec::new();
        t.lose_connection();
    }

    /// True between requests: nothing half-read.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.body_left == 0
    }
}

impl Protocol for Http {
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        if self.done {
            return;
        }
        self.watch = Stopwatch::start();
        if self.pending.is_empty() {
            let used = self.process(data, t);
            if !self.done {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            let mut input = std::mem::take(&mut self.pending);
            input.extend_from_slice(data);
            let used = self.process(&input, t);
            if !self.done {
                input.drain(..used);
                if input.is_empty() && input.capacity() > RETAIN {
                    input = Vec::new();
                }
                self.pending = input;
            }
        }
        self.watch_head(t);
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
        if self.idle() {
            self.close(t);
        }
    }
}

/// True when the request line ends in a well-formed `HTTP/x.y` this server does not speak
/// (505), as opposed to garbage (400).
fn names_http_version(input: &[u8]) -> bool {
    let line = input.split(|&b| b == b'\n').next().unwrap_or(input);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.split(|&b| b == b' ').nth(2) {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
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
    // Civil-from-days (proleptic Gregorian), with days counted from 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
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

    fn run(chunks: &[&[u8]]) -> (String, Transport) {
        let t = Transport::detached();
        let mut h = Http::default();
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
        let mut h = Http::default();
        for _ in 0..100 {
            h.data_received(&[b'x'; 1000], &t);
            assert!(h.pending.len() <= MAX_HEAD + 1000);
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
        let mut h = Http::default();
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
        let mut h = Http::default();
        h.drain_requested(&t);
        assert!(!t.is_connected(), "idle keep-alive connection closes at once");
        let t = Transport::detached();
        let mut h = Http::default();
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
}
