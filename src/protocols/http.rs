//! A minimal HTTP/1.1 server: the TechEmpower plaintext response.
//!
//! `GET /` (or `HEAD /`) answers `200 Hello, World!` with Content-Length, Content-Type, Date
//! and Server headers; other paths get 404, other methods 405. Keep-alive and pipelining
//! (responses in request order) are supported; HTTP/1.0 closes after the response unless the
//! client asked for keep-alive. Request bodies (`Content-Length` or chunked) are skipped.
//! Bad input is answered and the connection closed, with the status of its
//! [`HttpError`]: a malformed or ambiguously framed request gets 400, a header block over
//! [`MAX_HEAD`] 431, an unknown HTTP version 505, a transfer coding other than chunked 501.
//! Buffered input is bounded by [`MAX_HEAD`], so a flood without CRLF cannot grow memory. A
//! request head must arrive whole within the header timeout (default [`HEADER_TIMEOUT`]) of
//! its first byte, or the client gets 408 and is closed: a slowloris client cannot hold a
//! connection by trickling bytes.
//!
//! Framed: [`RequestDecoder`] cuts the byte stream into request heads ([`RequestHead`]),
//! skipping request bodies, and [`Http`] is the [`FrameHandler`] that answers them, served
//! through [`Framed`] ([`Http::factory`], [`Http::framed`]). Heads are parsed, and
//! responses written, by [`weft::http`](crate::http)'s parser and encoder; what this server
//! adds is a frame that allocates nothing (no path, no headers, no body kept) and the whole
//! keep-alive `200` formatted once a second.
//!
//! Every response's service time goes to the [`REQUEST_DURATION`] latency metric.

use std::cell::RefCell;
use std::time::Duration;

use crate::addr::Address;
use crate::driver::wall_clock::unix_seconds;
use crate::metrics::{LatencyMetric, Stopwatch};
use crate::proto::codec::{Decoder, Encoder, FrameHandler, Framed, InBuf};
use crate::proto::http::body::{BodyReader, Count};
use crate::proto::http::head::{Framing, Head, parse_head};
use crate::proto::http::{HttpError, HttpLimits, Response, ResponseEncoder, Version, reason};
use crate::proto::protocol::{FnFactory, factory_fn};
use crate::proto::transport::Transport;

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// What a request may hold: bodies are skipped, so they have no bound.
const LIMITS: HttpLimits = HttpLimits {
    max_head: MAX_HEAD,
    max_headers: 64,
    max_body: u64::MAX,
};
/// Capacity an emptied input buffer may keep: a request split across reads costs no
/// allocation.
const RETAIN: usize = 4096;
const BODY: &[u8] = b"Hello, World!";
/// The answer to a connection refused for overload (`--max-conns-per-core`), as nginx's
/// `limit_conn` answers.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 18\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver overloaded\n";
/// Default time a request head may take to arrive, from its first byte.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle keep-alive connection stays open once the drain begins, for a request
/// its client may have sent already: answered with `Connection: close` (a client that
/// writes as the server closes loses its request, the race nginx's idle closes have).
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

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
    /// The body's `Content-Length` (0 without one, or for a chunked body); the decoder
    /// skips the body.
    pub body_len: u64,
}

/// Cuts a connection's bytes into [`RequestHead`]s, skipping each request's body
/// (`Content-Length` or chunked), with [`weft::http`](crate::http)'s head parser and rules.
/// Bounded: a head still incomplete after [`MAX_HEAD`] bytes is
/// [`HttpError::HeadTooLarge`] as soon as they are passed, so a flood without CRLF never
/// buffers more than that and one read.
#[derive(Debug, Clone, Default)]
pub struct RequestDecoder {
    /// The body of the last request, while some of it is still to skip.
    body: Option<BodyReader>,
}

impl RequestDecoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the last request's body is still to skip.
    pub fn in_body(&self) -> bool {
        self.body.is_some()
    }
}

impl Decoder for RequestDecoder {
    type Frame = RequestHead;
    type Error = HttpError;

    fn decode(&mut self, buf: &mut InBuf<'_>) -> Result<Option<RequestHead>, HttpError> {
        if let Some(body) = &mut self.body {
            if !body
                .read(buf, &mut Count::default(), &LIMITS)
                .map_err(|e| HttpError::from_body(e, &LIMITS))?
            {
                return Ok(None);
            }
            self.body = None;
        }
        let Some(((head, body), len)) = parse_head(buf.as_slice(), &LIMITS, summarize)? else {
            return Ok(None);
        };
        buf.advance(len);
        self.body = Some(body).filter(|b| !b.is_done());
        Ok(Some(head))
    }
}

/// What this server needs of a parsed request head, and the reader that skips its body.
fn summarize(head: Head<'_, '_>) -> (RequestHead, BodyReader) {
    let method = match head.method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = head.path.split(['?', '#']).next().unwrap_or(head.path);
    let summary = RequestHead {
        method,
        root: path == "/",
        http10: head.version == Version::Http10,
        keep_alive: head.keep_alive,
        body_len: match head.framing {
            Framing::Length(n) => n,
            Framing::Chunked => 0,
        },
    };
    (summary, BodyReader::new(head.framing))
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
    /// The deadline armed is the drain grace of an idle connection, not a head's.
    grace: bool,
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
            grace: false,
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
            .with_overload_answer(OVERLOADED)
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
            (Method::Get | Method::Head, true) => 200,
            (Method::Get | Method::Head, false) => 404,
            (Method::Other, _) => 405,
        };
        write_response(t, status, head.method == Method::Head, keep_alive, head.http10);
        REQUEST_DURATION.record_since(self.watch);
        if !keep_alive {
            self.close(t);
        }
    }

    /// Answers bad input with `status` and closes.
    fn fail(&mut self, t: &Transport, status: u16) {
        write_response(t, status, false, false, false);
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

    fn decode_failed(&mut self, error: HttpError, t: &Transport) {
        if !self.done {
            self.start_watch();
            self.fail(t, error.status());
        }
    }

    /// Arms the header deadline while a request head is incomplete, clears it otherwise (and
    /// while the output is full: what is kept then includes whole requests held back, and the
    /// wait is the server's). While draining, an idle connection keeps its drain grace.
    fn read_decoded(&mut self, decoder: &RequestDecoder, buffered: usize, t: &Transport) {
        self.timing = false;
        self.idle = buffered == 0 && !decoder.in_body();
        if self.grace {
            if self.idle && !self.done {
                return;
            }
            // A request began within the grace: its head gets the header timeout.
            self.grace = false;
            t.clear_deadline();
        }
        if self.done || buffered == 0 || t.is_output_full() {
            t.clear_deadline();
        } else if !t.has_deadline() {
            t.set_deadline(self.header_timeout);
        }
    }

    fn deadline_expired(&mut self, t: &Transport) {
        if self.grace {
            // The drain grace ran out with no request: close quietly.
            self.close(t);
        } else if !self.done {
            // A head that never arrived is not a request served: its 408 is not timed.
            self.watch = Stopwatch::default();
            self.fail(t, 408);
        }
    }

    /// Finishes the request in progress with `Connection: close`; an idle connection waits
    /// [`DRAIN_GRACE`] for a request already on its way, then closes.
    fn drain_requested(&mut self, t: &Transport) {
        self.draining = true;
        if self.idle && !self.done {
            self.grace = true;
            t.set_deadline(DRAIN_GRACE);
        }
    }
}

/// Writes the answer with `status`: the cached keep-alive `200`, or one encoded now.
fn write_response(t: &Transport, status: u16, head_only: bool, keep_alive: bool, http10: bool) {
    RESPONSES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if status == 200 && !head_only && keep_alive && !http10 {
            // The common case: bytes formatted at most once a second.
            t.write(cache.hello());
            return;
        }
        let response = response(status, head_only, keep_alive, http10);
        if let Err(e) = t.write_frame(&mut cache.encoder, response) {
            tracing::error!("the http protocol's own response could not be encoded: {e}");
        }
    });
}

/// The answer with `status`: `Hello, World!` for a 200, the status line's text otherwise.
fn response(status: u16, head_only: bool, keep_alive: bool, http10: bool) -> Response {
    let body = if status == 200 {
        BODY.to_vec()
    } else {
        format!("{status} {}", reason(status)).into_bytes()
    };
    let mut r = Response::new(status)
        .with_header("Server", "weft")
        .with_header("Content-Type", "text/plain")
        .with_body(body)
        .keeping(keep_alive, if http10 { Version::Http10 } else { Version::Http11 });
    if status == 405 {
        r = r.with_header("Allow", "GET, HEAD");
    }
    if head_only {
        r = r.for_head();
    }
    r
}

thread_local! {
    /// Each shard formats its whole keep-alive `200` once a second.
    static RESPONSES: RefCell<ResponseCache> = RefCell::new(ResponseCache::default());
}

#[derive(Debug, Default)]
struct ResponseCache {
    encoder: ResponseEncoder,
    /// The second `hello` was formatted in.
    secs: u64,
    /// The complete HTTP/1.1 keep-alive `200 Hello, World!` response.
    hello: Vec<u8>,
}

impl ResponseCache {
    /// The keep-alive `200`, formatted again when the second changed.
    fn hello(&mut self) -> &[u8] {
        let secs = unix_seconds();
        if secs != self.secs || self.hello.is_empty() {
            self.secs = secs;
            self.hello.clear();
            if let Err(e) = self
                .encoder
                .encode(response(200, false, true, false), &mut self.hello)
            {
                tracing::error!("the http protocol's own response could not be encoded: {e}");
            }
        }
        &self.hello
    }
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
        let (_, t) = run(&[b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"]);
        assert!(!t.is_connected());
    }

    #[test]
    fn bad_input_statuses() {
        let cases: [(&[u8], &str); 8] = [
            (b"GARBAGE\r\n\r\n", "400"),
            (b"NOT HTTP AT ALL\r\n\r\n", "400"),
            (b"GET / HTTP/2.0\r\n\r\n", "505"),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
                "405",
            ),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", "400"),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "400",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "501",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "400",
            ),
        ];
        for (input, want) in cases {
            let (out, _) = run(&[input]);
            assert_eq!(statuses(&out)[0], want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn oversized_head_is_431_and_bounded() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
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
            b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
            b"cdeGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ]);
        assert_eq!(statuses(&out), vec!["405", "200"]);
        let (out, _) = run(&[b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"]);
        assert!(out.contains("Content-Length: 13") && !out.contains("Hello"));
    }

    #[test]
    fn header_deadline_is_armed_while_a_head_is_incomplete() {
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.data_received(b"GET / HT", &t);
        assert!(t.has_deadline());
        h.data_received(b"TP/1.1\r\nHost: h\r\n\r\n", &t);
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
        assert!(
            t.is_connected() && t.has_deadline(),
            "an idle connection gets the grace"
        );
        h.deadline_expired(&t);
        assert!(!t.is_connected(), "then closes");
        assert!(t.out().chunk().is_empty(), "quietly: no 408");
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.drain_requested(&t);
        h.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &t);
        let out = String::from_utf8_lossy(t.out().chunk()).into_owned();
        assert!(
            out.contains("200 OK") && out.contains("Connection: close"),
            "{out}"
        );
        assert!(
            !t.is_connected(),
            "a request in the grace is answered, then the close"
        );
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.drain_requested(&t);
        h.data_received(b"GET / HTTP/1.1\r\nHo", &t);
        let at = t.deadline().expect("a deadline");
        assert!(
            at > std::time::Instant::now() + DRAIN_GRACE,
            "a head begun in the grace has the header timeout, not the rest of the grace"
        );
        h.deadline_expired(&t);
        let out = String::from_utf8_lossy(t.out().chunk()).into_owned();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        let t = Transport::detached();
        let mut h = Http::default().framed();
        h.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n", &t);
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
        run(&[
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n",
            b"\r\nBAD\r\n\r\n",
        ]);
        let taken = crate::metrics::take_interval();
        crate::metrics::uninstall_recorder();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].name, "http_request_duration");
        assert_eq!(taken[0].histogram.len(), 3, "200, 404 and 400 are each timed");
    }

    /// Feeds `chunks` to a decoder; returns the heads, then the error or the bytes left.
    fn decode_chunks(chunks: &[&[u8]]) -> (Vec<RequestHead>, Result<Vec<u8>, HttpError>) {
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
    type DecodeCase = (&'static [u8], Vec<RequestHead>, Result<&'static [u8], HttpError>);

    fn decode_cases() -> Vec<DecodeCase> {
        use crate::proto::http::BadRequest::*;
        use Method::*;
        let bad = HttpError::BadRequest;
        let get = head(Get, true, false, true, 0);
        vec![
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", vec![get], Ok(b"")),
            (b"GET / HTTP/1.1\nHost: h\n\n", vec![get], Ok(b"")),
            (
                b"GET /a?x HTTP/1.1\r\nHost: h\r\n\r\nHEAD /?q#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HT",
                vec![head(Get, false, false, true, 0), head(Head, true, true, true, 0)],
                Ok(b"GET / HT"),
            ),
            (
                b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                vec![head(Other, false, false, true, 5), get],
                Ok(b""),
            ),
            (
                b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
                vec![head(Other, true, false, true, 10)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length:  2 \r\n\r\nxy",
                vec![head(Get, true, false, true, 2)],
                Ok(b""),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                vec![head(Other, true, false, true, 0), get],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\ncontent-length: 2\r\nContent-Length: 2\r\n\r\nxy",
                vec![],
                Err(bad(DuplicateContentLength)),
            ),
            (
                b"GET / HTTP/1.0\r\n\r\n",
                vec![head(Get, true, true, false, 0)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
                vec![head(Get, true, false, false, 0)],
                Ok(b""),
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: close , keep-alive\r\n\r\n",
                vec![head(Get, true, true, true, 0)],
                Ok(b""),
            ),
            (b"GARBAGE\r\n\r\n", vec![], Err(bad(Syntax))),
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBAD\r\n\r\n", vec![get], Err(bad(Syntax))),
            (b"GET / HTTP/2.0\r\n\r\n", vec![], Err(HttpError::UnsupportedVersion)),
            (b"GET / HTTP/3.0 x\r\n\r\n", vec![], Err(HttpError::UnsupportedVersion)),
            (b"GET / HTTP/2.x\r\n\r\n", vec![], Err(bad(Syntax))),
            (b"GET / HTTP/22.0\r\n\r\n", vec![], Err(bad(Syntax))),
            (b"GET / HTTX/1.1\r\n\r\n", vec![], Err(bad(Syntax))),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
                vec![],
                Err(bad(InvalidContentLength)),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                vec![],
                Err(bad(DuplicateContentLength)),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                vec![],
                Err(bad(ContentLengthWithTransferEncoding)),
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
        buf.extend(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().body_len, 6);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!((d.in_body(), buf.len()), (true, 0));
        buf.extend(b"cdefGET");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!((d.in_body(), buf.as_slice()), (false, b"GET".as_slice()));
    }

    const TOO_LARGE: HttpError = HttpError::HeadTooLarge {
        max_head: MAX_HEAD,
        max_headers: 64,
    };

    /// A head of exactly `len` bytes.
    fn head_of(len: usize) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
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
            assert_eq!(split(&over), (vec![], Err(TOO_LARGE)), "split at {at}");
            assert_eq!(split(&flood), (vec![], Err(TOO_LARGE)), "split at {at}");
        }
        // Just under the bound, a flood still waits for its end.
        assert_eq!(
            decode_chunks(&[&flood[..MAX_HEAD]]),
            (vec![], Ok(flood[..MAX_HEAD].to_vec()))
        );
        // Too many headers.
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for _ in 0..=LIMITS.max_headers {
            many.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(decode_chunks(&[&many]), (vec![], Err(TOO_LARGE)));
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
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD /x HTTP/1.1\r\nHost: h\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/9.9\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
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
