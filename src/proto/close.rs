//! Why a connection ended: [`CloseReason`] and its labels.

use std::io;
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
    /// Queued output passed the transport's hard cap (`FlowConfig::max_output`): the
    /// peer reads far slower than the protocol writes.
    OutputLimit,
    /// Output was queued but the peer accepted none of it for the write-stall timeout.
    WriteStall,
    /// Nothing was read or written for the idle timeout.
    IdleTimeout,
    /// The protocol's deadline ([`Transport::set_deadline`](crate::Transport::set_deadline))
    /// passed.
    DeadlineExpired,
    /// One of the protocol's callbacks panicked: the connection was reset, the panic logged,
    /// and the protocol is not called again (not even `connection_lost`); the shard and its
    /// other connections carry on.
    Panicked,
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

    /// A short stable label, used in logs and metrics (`eof`, `local`, `aborted`, ...): one of
    /// [`CLOSE_LABELS`].
    pub fn label(&self) -> &'static str {
        CLOSE_LABELS[self.index()]
    }

    /// The reason's place in [`CLOSE_LABELS`]. The match names every variant, so a new
    /// reason does not compile until it has a label of its own.
    pub(crate) fn index(&self) -> usize {
        match self {
            Self::PeerEof => 0,
            Self::LocalClose => 1,
            Self::Aborted => 2,
            Self::Reset => 3,
            Self::Io(_) => 4,
            Self::Shutdown => 5,
            Self::OutputLimit => 6,
            Self::WriteStall => 7,
            Self::IdleTimeout => 8,
            Self::DeadlineExpired => 9,
            Self::Panicked => 10,
        }
    }
}

/// The label of every [`CloseReason`], in the order of [`CloseReason::label`]'s indices, which
/// is the order [`StatsSnapshot::closed`](crate::StatsSnapshot) reports them.
pub const CLOSE_LABELS: [&str; 11] = [
    "eof",
    "local",
    "aborted",
    "reset",
    "io_error",
    "shutdown",
    "output_limit",
    "write_stall",
    "idle_timeout",
    "deadline",
    "panic",
];

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
            Self::Panicked => f.write_str("a protocol callback panicked"),
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
}
