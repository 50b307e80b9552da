//! A health check for load balancers and orchestrators: a small HTTP listener, apart from the
//! served protocol, that answers `200 serving` while the engine accepts and `503 draining`
//! once its shutdown or handoff has started.
//!
//! Any request on it gets the answer (`GET /health`, `GET /`, or a bare connect for a TCP
//! check); HAProxy: `option httpchk GET /health` with `check port N`; Kubernetes: an
//! `httpGet` readiness probe. Probes are answered one at a time on a thread of its own, with
//! a 1 s limit to read a request, so the engine's cores never see them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::driver::engine::EngineControl;
use crate::responder::{Limits, Responder};

/// What a probe may cost: a request head of 1 KiB at most, sent within 1 s.
const LIMITS: Limits = Limits {
    max_head: 1024,
    timeout: Duration::from_secs(1),
};

/// The answer to a probe.
pub(crate) fn response(serving: bool) -> &'static [u8] {
    if serving {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\nserving\n"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\
          Connection: close\r\n\r\ndraining\n"
    }
}

/// A running health-check listener. Dropping it stops the answering thread.
#[derive(Debug)]
pub struct HealthCheck {
    responder: Responder,
}

impl HealthCheck {
    /// Answers probes on `listener` (bound and listening) with the state of `engine`.
    ///
    /// # Errors
    ///
    /// The listener cannot be made non-blocking, or the thread cannot start.
    pub fn start(listener: TcpListener, engine: EngineControl) -> io::Result<Self> {
        let answer = Box::new(move |_: &[u8]| response(engine.is_serving()).to_vec());
        Ok(Self {
            responder: Responder::start(listener, "weft-health", LIMITS, answer)?,
        })
    }

    /// The address probes go to.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.responder.local_addr()
    }

    /// The listening socket, to hand to a successor process.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.responder.listener()
    }

    /// Stops answering and waits for the thread. The socket stays open until this value is
    /// dropped, and is never shut down: a successor may be answering on it.
    pub fn stop(&self) {
        self.responder.stop();
    }
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
}
