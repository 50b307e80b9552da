//! Error and close-reason types.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a connection ended. Delivered exactly once to [`Protocol::connection_lost`].
///
/// [`Protocol::connection_lost`]: crate::Protocol::connection_lost
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (EOF) and everything queued for it was flushed: a clean end.
    PeerEof,
    /// This side called `lose_connection` and everything queued was flushed: a clean end.
    LocalClose,
    /// This side called `abort_connection`: unsent data was dropped and the peer saw a reset.
    Aborted,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`).
    Reset,
    /// Any other I/O error on the socket.
    Io(Arc<io::Error>),
    /// The engine shut down and its drain timeout ran out before the connection finished.
    Shutdown,
    /// Queued output passed the transport's hard cap (`ConnectionConfig::max_output`): the
    /// peer reads far slower than the protocol writes.
    OutputLimit,
    /// Output was queued but the peer accepted none of it for the write-stall timeout.
    WriteStall,
    /// Nothing was read or written for the idle timeout.
    IdleTimeout,
    /// The protocol's deadline ([`Transport::set_deadline`](crate::Transport::set_deadline))
    /// passed.
    DeadlineExpired,
}

impl CloseReason {
    /// True for the clean endings ([`PeerEof`](Self::PeerEof), [`LocalClose`](Self::LocalClose)).
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::PeerEof | Self::LocalClose)
    }

    /// Classifies an I/O error from a read or write on an open connection.
    pub(crate) fn from_io(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => Self::Reset,
            _ => Self::Io(Arc::new(err)),
        }
    }

    /// A short stable label, used in logs and metrics (`eof`, `local`, `aborted`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Self::PeerEof => "eof",
            Self::LocalClose => "local",
            Self::Aborted => "aborted",
            Self::Reset => "reset",
            Self::Io(_) => "io_error",
            Self::Shutdown => "shutdown",
            Self::OutputLimit => "output_limit",
            Self::WriteStall => "write_stall",
            Self::IdleTimeout => "idle_timeout",
            Self::DeadlineExpired => "deadline",
        }
    }
}

impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Io(a), Self::Io(b)) => a.kind() == b.kind(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for CloseReason {}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerEof => f.write_str("the peer closed the connection"),
            Self::LocalClose => f.write_str("closed locally"),
            Self::Aborted => f.write_str("aborted locally"),
            Self::Reset => f.write_str("reset by peer"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Shutdown => f.write_str("the engine shut down"),
            Self::OutputLimit => f.write_str("queued output passed the hard cap"),
            Self::WriteStall => f.write_str("the peer stopped reading (write stall timeout)"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::DeadlineExpired => f.write_str("the protocol's deadline passed"),
        }
    }
}

/// Why an [`Engine`](crate::Engine) could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Binding or listening on an address failed (Twisted's `CannotListenError`).
    #[error("cannot listen on {addr}: {source}")]
    CannotListen {
        /// The address that could not be bound.
        addr: crate::Address,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No listen address was configured.
    #[error("no listen address given: add at least one (e.g. --listen 127.0.0.1:7000)")]
    NoListenAddress,
    /// The core selection does not fit the CPUs this process may run on.
    #[error("{0}")]
    Cores(String),
    /// RLIMIT_MEMLOCK is too low for io_uring and could not be raised.
    #[error(
        "locked-memory limit too low for io_uring: soft {soft} B, hard {hard} B, need {need} B; \
         raise it (ulimit -l, systemd LimitMEMLOCK=, docker --ulimit memlock=)"
    )]
    MemLock {
        /// Soft limit after the attempt to raise it.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// What glommio needs per executor.
        need: u64,
    },
    /// io_uring could not be set up (kernel too old, disabled by sysctl, or blocked by seccomp).
    #[error(
        "cannot start an io_uring reactor on shard {shard}: {detail} (weft needs Linux >= 5.8 with \
         io_uring enabled: check kernel.io_uring_disabled and any container seccomp profile)"
    )]
    IoUring {
        /// Shard index.
        shard: usize,
        /// What the reactor reported.
        detail: String,
    },
    /// Listening sockets handed over by another process could not be adopted.
    #[error("cannot adopt the inherited listening sockets: {0}")]
    Inherited(String),
    /// The configuration contradicts itself.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A shard thread could not be created or failed.
    #[error("shard {shard} failed: {detail}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// What went wrong.
        detail: String,
    },
}

impl EngineError {
    pub(crate) fn cannot_listen(addr: SocketAddr, source: io::Error) -> Self {
        Self::CannotListen {
            addr: addr.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_resets() {
        let r = CloseReason::from_io(io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(r, CloseReason::Reset);
        let p = CloseReason::from_io(io::Error::from_raw_os_error(libc::EPIPE));
        assert_eq!(p, CloseReason::Reset);
        let other = CloseReason::from_io(io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, CloseReason::Io(_)));
        assert_eq!(other.label(), "io_error");
        assert!(!other.is_clean());
        assert!(CloseReason::PeerEof.is_clean());
    }

    #[test]
    fn cannot_listen_names_the_address() {
        let e = EngineError::cannot_listen(
            "127.0.0.1:80".parse().unwrap(),
            io::Error::from_raw_os_error(libc::EADDRINUSE),
        );
        let text = e.to_string();
        assert!(text.starts_with("cannot listen on 127.0.0.1:80: "), "{text}");
    }
}
