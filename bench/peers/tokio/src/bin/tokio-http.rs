//! HTTP/1.1 plaintext server on tokio (the TechEmpower `Hello, World!`), set up like the
//! echo peer: one pinned current-thread runtime per core, each with its own SO_REUSEPORT
//! listener, nodelay on accept. Requests are parsed with httparse; keep-alive and pipelining
//! are supported (every complete request in a read is answered, responses go out in one
//! write). The response carries the same headers as weft's http protocol.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use peer_args::{ServerArgs, raise_nofile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_peers::per_core;

/// Largest request head accepted.
const MAX_HEAD: usize = 8192;

/// tokio HTTP plaintext server, one runtime per core.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let cores = args.server.cores()?;
    raise_nofile();
    per_core(&cores, args.server.listen, serve).map_err(|e| e.to_string())
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

/// What to do after the requests parsed from one read.
enum Next {
    Read,
    Close,
}

async fn connection(mut stream: TcpStream) {
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    let mut body_left = 0usize;
    loop {
        if input.capacity() == input.len() {
            input.reserve(4096);
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (used, next) = answer(&input, &mut body_left, &mut output);
        input.drain(..used);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        if matches!(next, Next::Close) {
            return;
        }
    }
}

/// Answers every complete request in `input` into `output`; returns the bytes consumed.
fn answer(input: &[u8], body_left: &mut usize, output: &mut Vec<u8>) -> (usize, Next) {
    let mut pos = 0;
    loop {
        let skip = (*body_left).min(input.len() - pos);
        pos += skip;
        *body_left -= skip;
        if pos == input.len() {
            return (pos, Next::Read);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&input[pos..]) {
            Ok(httparse::Status::Complete(len)) => {
                pos += len;
                let mut keep_alive = req.version == Some(1);
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !h.value.eq_ignore_ascii_case(b"close")
                            && (keep_alive || h.value.eq_ignore_ascii_case(b"keep-alive"));
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        *body_left = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    }
                }
                let found = req.path == Some("/");
                respond(output, found, keep_alive);
                if !keep_alive {
                    return (input.len(), Next::Close);
                }
            }
            Ok(httparse::Status::Partial) if input.len() - pos <= MAX_HEAD => return (pos, Next::Read),
            Ok(httparse::Status::Partial) | Err(_) => {
                output.extend_from_slice(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return (input.len(), Next::Close);
            }
        }
    }
}

fn respond(output: &mut Vec<u8>, found: bool, keep_alive: bool) {
    let (status, body): (&str, &[u8]) = if found {
        ("200 OK", b"Hello, World!")
    } else {
        ("404 Not Found", b"Not Found")
    };
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        let date = d.now();
        output.extend_from_slice(b"HTTP/1.1 ");
        output.extend_from_slice(status.as_bytes());
        output.extend_from_slice(b"\r\nServer: tokio\r\nDate: ");
        output.extend_from_slice(date.as_bytes());
        output.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
        output.extend_from_slice(body.len().to_string().as_bytes());
        if !keep_alive {
            output.extend_from_slice(b"\r\nConnection: close");
        }
        output.extend_from_slice(b"\r\n\r\n");
        output.extend_from_slice(body);
    });
}

thread_local! {
    /// The Date header, formatted at most once a second per runtime thread.
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::default());
}

#[derive(Default)]
struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (usize, bool, String) {
        let (mut body_left, mut out) = (0, Vec::new());
        let (used, next) = answer(input, &mut body_left, &mut out);
        (used, matches!(next, Next::Close), String::from_utf8(out).unwrap())
    }

    #[test]
    fn pipelined_requests_get_responses_in_one_batch() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (used, close, out) = run(&[&get[..], &get[..], b"GET / HT"].concat());
        assert_eq!((used, close), (2 * get.len(), false));
        assert_eq!(
            out.matches("HTTP/1.1 200 OK\r\nServer: tokio\r\nDate: ").count(),
            2
        );
        assert!(out.ends_with("Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"));
    }

    #[test]
    fn close_404_body_and_garbage() {
        let (_, close, out) = run(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(close && out.starts_with("HTTP/1.1 404 Not Found") && out.contains("Connection: close"));
        let (_, close, _) = run(b"GET / HTTP/1.0\r\n\r\n");
        assert!(close, "HTTP/1.0 closes unless asked to keep alive");
        let post = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\n\r\n";
        let (used, close, out) = run(post);
        assert_eq!(
            (used, close, out.matches(" 200 OK").count()),
            (post.len(), false, 2)
        );
        let (_, close, out) = run(b"\x01\x02 nonsense\r\n\r\n");
        assert!(close && out.starts_with("HTTP/1.1 400"));
    }
}
