//! Prometheus scrapes: `GET /metrics` answered by a side-listener [`Responder`] thread, one
//! request per connection, with bounded input and time.

use std::net::SocketAddr;
use std::time::Duration;

use super::MetricsHandle;
use super::process::ProcessStats;
use super::prometheus::{self, CONTENT_TYPE};
use crate::error::EngineError;
use crate::responder::{Limits, Responder};
use crate::sys::socket::listen_socket;

/// What one scrape connection may cost: a request head of 8 KiB at most, sent within 2 s.
const LIMITS: Limits = Limits {
    max_head: 8 * 1024,
    timeout: Duration::from_secs(2),
};

/// Serves the Prometheus text format of an engine's metrics at `/metrics`, followed by the
/// process's own series as Prometheus client libraries export them
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`, read from `/proc/self` at each scrape)
/// and `weft_build_info{version="..."} 1`.
///
/// One thread answers one connection at a time: a scraper is expected, not a crowd. Each
/// connection gets 2 s to send a request head of at most 8 KiB; anything else is answered
/// with an error status and closed. Dropping the exporter stops its thread.
#[derive(Debug)]
pub struct PrometheusExporter {
    addr: SocketAddr,
    /// Answers until dropped.
    _responder: Responder,
}

/// Listen backlog of the scrape listener: scrapers are few.
const SCRAPE_BACKLOG: u32 = 64;

impl PrometheusExporter {
    /// Binds `addr` and starts answering scrapes of `metrics`.
    ///
    /// # Errors
    ///
    /// [`EngineError::CannotListen`] naming the address, or [`EngineError::Metrics`] if the
    /// thread cannot start.
    pub fn start(addr: SocketAddr, metrics: MetricsHandle) -> Result<Self, EngineError> {
        Self::start_with(addr, metrics, |_| {})
    }

    /// As [`start`](Self::start), with `extra` appending more metric families to each scrape
    /// (a service's TLS certificates).
    pub(crate) fn start_with(
        addr: SocketAddr,
        metrics: MetricsHandle,
        extra: impl Fn(&mut String) + Send + 'static,
    ) -> Result<Self, EngineError> {
        let listener = Self::bind(addr).map_err(|e| EngineError::cannot_listen(addr, e))?;
        Self::serve_on(listener, metrics, extra)
    }

    /// The listening socket the exporter serves on: SO_REUSEPORT, like the service's own
    /// ports, so that a successor taking over with `--takeover` binds the same address while
    /// this process drains. A service binds it before it starts, so that a port it cannot
    /// have fails the start before anything serves.
    pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        listen_socket(addr, SCRAPE_BACKLOG)
            .and_then(|s| s.set_nonblocking(false).map(|()| std::net::TcpListener::from(s)))
    }

    /// Answers scrapes of `metrics` (and `extra`) on `listener`, bound by [`bind`](Self::bind).
    pub(crate) fn serve_on(
        listener: std::net::TcpListener,
        metrics: MetricsHandle,
        extra: impl Fn(&mut String) + Send + 'static,
    ) -> Result<Self, EngineError> {
        let bound = listener.local_addr().map_err(EngineError::Metrics)?;
        let answer = Box::new(move |head: &[u8]| {
            respond(head, || {
                let mut text = scrape(&metrics);
                extra(&mut text);
                text
            })
        });
        let responder =
            Responder::start(listener, "weft-prometheus", LIMITS, answer).map_err(EngineError::Metrics)?;
        Ok(Self {
            addr: bound,
            _responder: responder,
        })
    }

    /// The bound address (with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The text of one scrape: the engine's metrics, then the process's (read now).
fn scrape(metrics: &MetricsHandle) -> String {
    let mut text = prometheus::render(&metrics.snapshot());
    text.push_str(&prometheus::render_process(&ProcessStats::read()));
    text
}

/// The complete response to the request head `head` (which may be cut at the size bound, or
/// short when the client stopped sending). `render` makes the metrics text, only when it is
/// asked for.
fn respond(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (status, body, with_body) = match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let method = req.method.unwrap_or("");
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or(path);
            match (method, path) {
                ("GET" | "HEAD", "/metrics") => ("200 OK", render(), method == "GET"),
                ("GET" | "HEAD", _) => (
                    "404 Not Found",
                    "not found: try /metrics\n".into(),
                    method == "GET",
                ),
                _ => ("405 Method Not Allowed", "method not allowed\n".into(), true),
            }
        }
        Ok(httparse::Status::Partial) if head.len() >= LIMITS.max_head => (
            "431 Request Header Fields Too Large",
            "request too large\n".into(),
            true,
        ),
        Ok(httparse::Status::Partial) | Err(_) => ("400 Bad Request", "bad request\n".into(), true),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(head: &[u8]) -> String {
        String::from_utf8(respond(head, || "m 1\n".into())).unwrap()
    }

    #[test]
    fn routes_and_statuses() {
        let ok = answer_to(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(
            ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"),
            "{ok}"
        );
        let head = answer_to(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(answer_to(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let post = answer_to(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        assert!(answer_to(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut cut = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        cut.resize(LIMITS.max_head, b'a');
        assert!(answer_to(&cut).starts_with("HTTP/1.1 431"));
        assert!(
            answer_to(b"GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 400"),
            "cut short"
        );
    }

    #[test]
    fn only_a_metrics_request_renders() {
        let mut rendered = false;
        let _ = respond(b"GET /nope HTTP/1.1\r\n\r\n", || {
            rendered = true;
            String::new()
        });
        assert!(!rendered);
    }
}
