//! A health check for load balancers and orchestrators: a small HTTP listener, apart from the
//! served protocol, that answers `200 serving` while the engine accepts and `503 draining`
//! once its shutdown or handoff has started.
//!
//! Any request on it gets the answer (`GET /health`, `GET /`, or a bare connect for a TCP
//! check); HAProxy: `option httpchk GET /health` with `check port N`; Kubernetes: an
//! `httpGet` readiness probe. Probes are answered one at a time on a thread of its own, with
//! a 1 s limit to read a request, so the engine's cores never see them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::ShutdownHandle;

/// Longest request head read from a probe.
const MAX_REQUEST: usize = 1024;
/// How long a probe may take to send its request (and to read the answer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error other than "nothing queued" (EMFILE and the like).
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The answer to a probe.
pub(crate) fn response(serving: bool) -> &'static [u8] {
    if serving {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nserving\n"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\
          Connection: close\r\n\r\ndraining\n"
    }
}

/// True once `buf` holds a whole request head.
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// A running health-check listener. Dropping it stops the answering thread.
#[derive(Debug)]
pub struct HealthCheck {
    listener: Arc<TcpListener>,
    /// Dropping this end wakes the thread, which then exits.
    stop: Mutex<Option<UnixStream>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HealthCheck {
    /// Answers probes on `listener` (bound and listening) with the state of `engine`.
    ///
    /// # Errors
    ///
    /// The listener cannot be made non-blocking, or the thread cannot start.
    pub fn start(listener: TcpListener, engine: ShutdownHandle) -> io::Result<Self> {
        // Non-blocking: a successor sharing the socket may take a probe first.
        listener.set_nonblocking(true)?;
        let listener = Arc::new(listener);
        let (stop, stopped) = UnixStream::pair()?;
        let l = listener.clone();
        let thread = std::thread::Builder::new()
            .name("weft-health".into())
            .spawn(move || run(&l, &stopped, &engine))?;
        Ok(Self {
            listener,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The address probes go to.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listening socket, to hand to a successor process.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Stops answering and waits for the thread. The socket stays open until this value is
    /// dropped, and is never shut down: a successor may be answering on it.
    pub fn stop(&self) {
        self.stop.lock().unwrap_or_else(PoisonError::into_inner).take();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for HealthCheck {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(listener: &TcpListener, stopped: &UnixStream, engine: &ShutdownHandle) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stopped.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(
                "health check stopped: poll failed: {}",
                io::Error::last_os_error()
            );
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        match listener.accept() {
            Ok((probe, _)) => answer(probe, engine.is_serving()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(ERROR_BACKOFF),
        }
    }
}

/// Reads the probe's request (if any) and answers it.
fn answer(mut probe: TcpStream, serving: bool) {
    let _ = probe.set_nonblocking(false);
    let _ = probe.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = probe.set_write_timeout(Some(PROBE_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while head.len() < MAX_REQUEST && !head_complete(&head) {
        match probe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    // A vanished probe is nothing to report.
    let _ = probe.write_all(response(serving));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        for serving in [true, false] {
            let r = std::str::from_utf8(response(serving)).unwrap();
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{r}");
            assert_eq!(head.starts_with("HTTP/1.1 200 "), serving);
        }
    }

    #[test]
    fn heads() {
        assert!(head_complete(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!head_complete(b"GET /health HTTP/1.1\r\n"));
        assert!(!head_complete(b""));
    }
}
