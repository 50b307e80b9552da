//! A small HTTP/1 responder for the side listeners (health check, Prometheus metrics): one
//! thread answers one connection at a time with a single response, after reading a request
//! head bounded in size and time, then closes. The engine's cores never see these requests.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys::poll::wait_for_accept;

/// Pause after an accept error other than "nothing queued" (EMFILE and the like).
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// After answering, at most this much of what the client still sends is read and dropped,
/// for at most this long (a client that read its answer closes at once).
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// What one connection may cost the responder thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest request head read; a longer one is cut there.
    pub(crate) max_head: usize,
    /// Time to send the request head, and again to take the answer and close.
    pub(crate) timeout: Duration,
}

/// Makes the answer to a request head (complete, or cut by EOF, the time or size limit).
pub(crate) type Answer = Box<dyn Fn(&[u8]) -> Vec<u8> + Send>;

/// A running responder. Dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Responder {
    listener: Arc<TcpListener>,
    /// Dropping this end wakes the thread, which then exits.
    stop: Mutex<Option<UnixStream>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Responder {
    /// Answers every connection on `listener` (bound and listening) with `answer`, on a
    /// thread named `name`.
    ///
    /// # Errors
    ///
    /// The listener cannot be made non-blocking, or the thread cannot start.
    pub(crate) fn start(
        listener: TcpListener,
        name: &str,
        limits: Limits,
        answer: Answer,
    ) -> io::Result<Self> {
        // Non-blocking: a successor process sharing the socket may take a connection first.
        listener.set_nonblocking(true)?;
        let listener = Arc::new(listener);
        let (stop, stopped) = UnixStream::pair()?;
        let l = listener.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&l, &stopped, limits, &answer))?;
        Ok(Self {
            listener,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The listening address.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listening socket (to hand to a successor process).
    pub(crate) fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Stops answering and waits for the thread. The socket stays open until this value is
    /// dropped, and is never shut down: a successor may be answering on it.
    pub(crate) fn stop(&self) {
        self.stop.lock().unwrap_or_else(PoisonError::into_inner).take();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(listener: &TcpListener, stopped: &UnixStream, limits: Limits, answer: &Answer) {
    loop {
        match wait_for_accept(listener.as_fd(), stopped.as_fd()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(
                    "{} stopped: poll failed: {e}",
                    std::thread::current().name().unwrap_or("responder")
                );
                return;
            }
        }
        match listener.accept() {
            // A client that misbehaves or vanishes only loses its own answer.
            Ok((stream, _)) => {
                let _ = serve(stream, limits, answer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(ERROR_BACKOFF),
        }
    }
}

/// True once `buf` holds a whole request head.
pub(crate) fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Reads one request head, writes the answer, and closes politely: after our FIN it reads
/// and drops what the client still sends (bounded), so that the close sends a FIN rather
/// than a reset that could destroy the answer.
fn serve(mut stream: TcpStream, limits: Limits, answer: &Answer) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(limits.timeout))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limits.timeout;
    while head.len() < limits.max_head && !head_complete(&head) {
        let room = (limits.max_head - head.len()).min(buf.len());
        match read_until(&mut stream, &mut buf[..room], deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    stream.write_all(&answer(&head))?;
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + limits.timeout.min(LINGER_TIME);
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match read_until(&mut stream, &mut buf, deadline)? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// One read that gives up at `deadline`.
fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.read(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert!(head_complete(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!head_complete(b"GET /health HTTP/1.1\r\n"));
        assert!(!head_complete(b""));
    }

    #[test]
    fn answers_bounded_heads_and_bare_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = Limits {
            max_head: 16,
            timeout: Duration::from_millis(300),
        };
        let answer: Answer = Box::new(|head| format!("{}\n", head.len()).into_bytes());
        let r = Responder::start(listener, "test-responder", limits, answer).unwrap();
        let addr = r.local_addr().unwrap();
        let ask = |request: &[u8], close_write: bool| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(request).unwrap();
            if close_write {
                s.shutdown(Shutdown::Write).unwrap();
            }
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert_eq!(
            ask(b"GET / HTTP/1.1\r\n\r\n", true),
            "16\n",
            "cut at the size bound"
        );
        assert_eq!(ask(b"GET /\r\n\r\n", true), "9\n");
        assert_eq!(ask(b"", true), "0\n", "a bare connect is answered");
        assert_eq!(
            ask(b"GET", false),
            "3\n",
            "a stalled head is answered at the time bound"
        );
        r.stop();
    }
}
