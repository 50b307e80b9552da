//! Pieces the load clients share: one request/response exchange, splitting connections over
//! cores, and error tallies by kind.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Latency;

/// Longest one connect or exchange may take before it counts as a timeout.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many of `total` items the `index`-th of `parts` gets (the first ones get the remainder).
pub fn share(total: usize, parts: usize, index: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(index < total % parts)
}

/// A payload of `size` bytes (at least one) for echo requests.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size.max(1)).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Connects to `target` with nodelay on, within [`ATTEMPT_TIMEOUT`].
///
/// # Errors
///
/// The connect failed or timed out.
pub async fn connect(target: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = match tokio::time::timeout(ATTEMPT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(Failure::Connect),
        Err(_) => return Err(Failure::Timeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Writes `request` and reads exactly `reply.len()` bytes back, within [`ATTEMPT_TIMEOUT`].
///
/// # Errors
///
/// The peer closed or reset the connection, or the exchange timed out.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], reply: &mut [u8]) -> Result<(), Failure> {
    let io = async {
        stream.write_all(request).await?;
        stream.read_exact(reply).await?;
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Failure::Io),
        Err(_) => Err(Failure::Timeout),
    }
}

/// How [`one_shot`] closes its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close: the connection's port stays in TIME_WAIT on this side.
    Fin,
    /// A reset (SO_LINGER 0): no TIME_WAIT, so the port is free again at once.
    Reset,
}

/// One request on a new connection: connect, exchange, close as `close` says.
///
/// # Errors
///
/// The connect or the exchange failed.
pub async fn one_shot(
    target: SocketAddr,
    request: &[u8],
    reply: &mut [u8],
    close: Close,
) -> Result<(), Failure> {
    let mut stream = connect(target).await?;
    exchange(&mut stream, request, reply).await?;
    if close == Close::Reset {
        // A zero linger does not block on close (a non-zero one would).
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .map_err(|_| Failure::Io)?;
    }
    Ok(())
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// connect() failed (refused, no ephemeral port, reset during handshake).
    Connect,
    /// Reset, closed early or short read during the exchange.
    Io,
    /// No answer within [`ATTEMPT_TIMEOUT`].
    Timeout,
}

/// Failed attempts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    /// connect() failures.
    pub connect: u64,
    /// Failures during the exchange.
    pub io: u64,
    /// Timeouts.
    pub timeout: u64,
}

impl Errors {
    /// Counts one failure.
    pub fn count(&mut self, f: Failure) {
        match f {
            Failure::Connect => self.connect += 1,
            Failure::Io => self.io += 1,
            Failure::Timeout => self.timeout += 1,
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.io += o.io;
        self.timeout += o.timeout;
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.timeout
    }
}

/// What a worker (or all of them) counted: completed requests, failures, latency.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Completed requests.
    pub requests: u64,
    /// Failed attempts.
    pub errors: Errors,
    /// Latency of the completed requests.
    pub latency: Latency,
}

impl Tally {
    /// Adds another tally.
    pub fn merge(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.errors.merge(&o.errors);
        self.latency.merge(&o.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(50, 1), (50, 3), (2, 4), (0, 2)] {
            let sum: usize = (0..parts).map(|i| share(total, parts, i)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!(share(5, 2, 0), 3);
    }

    #[test]
    fn errors_tally_by_kind() {
        let mut e = Errors::default();
        e.count(Failure::Connect);
        e.count(Failure::Timeout);
        let mut f = Errors::default();
        f.count(Failure::Io);
        e.merge(&f);
        assert_eq!((e.connect, e.io, e.timeout, e.total()), (1, 1, 1, 3));
        assert_eq!(payload(3), b"abc");
    }
}
