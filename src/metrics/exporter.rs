//! A minimal blocking HTTP responder for Prometheus scrapes: `GET /metrics` on one thread,
//! one request per connection, with bounded input and time.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::MetricsHandle;
use super::prometheus::{self, CONTENT_TYPE};
use crate::EngineError;

/// Largest request head read, in bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one scrape connection may take to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, how long and how much of what the client still sends is read and
/// dropped, so that the close sends a FIN rather than a reset that could destroy the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;
/// Pause after a failed accept (out of descriptors, say), so that the thread never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the Prometheus text format of an engine's metrics at `/metrics`.
///
/// One thread answers one connection at a time: a scraper is expected, not a crowd. Each
/// connection gets 2 s to send a request head of at most 8 KiB; anything else is
/// answered with an error status and closed. Dropping the exporter stops its thread.
#[derive(Debug)]
pub struct PrometheusExporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusExporter {
    /// Binds `addr` and starts answering scrapes of `metrics`.
    ///
    /// # Errors
    ///
    /// [`EngineError::CannotListen`] naming the address, or [`EngineError::Shard`] if the
    /// thread cannot start.
    pub fn start(addr: SocketAddr, metrics: MetricsHandle) -> Result<Self, EngineError> {
        let listener = TcpListener::bind(addr).map_err(|e| EngineError::cannot_listen(addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EngineError::cannot_listen(addr, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-prometheus".into())
            .spawn(move || serve(&listener, &metrics, &stopping))
            .map_err(|e| EngineError::Shard {
                shard: 0,
                detail: format!("cannot start the metrics exporter thread: {e}"),
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept with a connection of our own; if that fails the thread is
        // left to end with the process.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        if TcpStream::connect_timeout(&wake, IO_TIMEOUT).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, metrics: &MetricsHandle, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match accepted {
            // A scraper that misbehaves only loses its own answer.
            Ok((stream, _)) => {
                let _ = answer(stream, metrics);
            }
            Err(_) => std::thread::sleep(ACCEPT_BACKOFF),
        }
    }
}

/// Reads one request head (bounded in size and time) and writes the answer.
fn answer(mut stream: TcpStream, metrics: &MetricsHandle) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= MAX_REQUEST {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => return Ok(()),
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = respond(&head, || prometheus::render(&metrics.snapshot()));
    stream.write_all(&response)?;
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// The complete response to the request head `head` (which may be cut at the size bound).
/// `render` makes the metrics text, only when it is asked for.
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
        Ok(httparse::Status::Partial) => (
            "431 Request Header Fields Too Large",
            "request too large\n".into(),
            true,
        ),
        Err(_) => ("400 Bad Request", "bad request\n".into(), true),
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
        let big = [b'a'; MAX_REQUEST + 1];
        let mut cut = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        cut.extend_from_slice(&big);
        assert!(answer_to(&cut).starts_with("HTTP/1.1 431"));
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
