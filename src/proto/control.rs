//! The commands an engine's handle sends its shards, as bytes on each shard's control socket:
//! one byte names the command, and a stop of one listener carries that listener's index in
//! the bytes after it. The handle and the shards are one process, so the index travels as a
//! native `usize`.

/// Drain: close every listener, let the connections finish, then stop.
const DRAIN: u8 = b'D';
/// Abort every connection now.
const ABORT: u8 = b'A';
/// A successor process accepts on the listeners now: stop accepting without closing them,
/// then drain.
const HAND_OFF: u8 = b'H';
/// Stop one listener; its index follows.
const STOP_LISTENING: u8 = b'L';

/// Bytes of a listener's index.
const INDEX_LEN: usize = size_of::<usize>();
/// The longest command, in bytes.
pub(crate) const MAX_LEN: usize = 1 + INDEX_LEN;

/// What a shard is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Close every listener, drain the connections, stop.
    Drain,
    /// Abort every connection, stop.
    Abort,
    /// Stop accepting without closing the listeners (a successor accepts on them), drain,
    /// stop.
    HandOff,
    /// Stop accepting on the listener of this index (in the order the listeners were
    /// added) and close it; everything else goes on.
    StopListening(usize),
}

impl Command {
    /// The bytes of the command that starts with the byte `head`, `head` included.
    pub(crate) fn len(head: u8) -> usize {
        match head {
            STOP_LISTENING => MAX_LEN,
            _ => 1,
        }
    }

    /// The command in `bytes`, which holds [`len`](Self::len) bytes. A byte no command
    /// starts with (the handle writes none) drains, the safe way to stop.
    pub(crate) fn decode(bytes: &[u8]) -> Self {
        match bytes {
            [ABORT] => Self::Abort,
            [HAND_OFF] => Self::HandOff,
            [STOP_LISTENING, index @ ..] => match <[u8; INDEX_LEN]>::try_from(index) {
                Ok(index) => Self::StopListening(usize::from_le_bytes(index)),
                Err(_) => Self::Drain,
            },
            _ => Self::Drain,
        }
    }

    /// The command's bytes: the first `len` of the array.
    pub(crate) fn encode(self) -> ([u8; MAX_LEN], usize) {
        let mut out = [0u8; MAX_LEN];
        let head = match self {
            Self::Drain => DRAIN,
            Self::Abort => ABORT,
            Self::HandOff => HAND_OFF,
            Self::StopListening(index) => {
                out[1..].copy_from_slice(&index.to_le_bytes());
                STOP_LISTENING
            }
        };
        out[0] = head;
        (out, Self::len(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_decodes_to_itself() {
        for cmd in [
            Command::Drain,
            Command::Abort,
            Command::HandOff,
            Command::StopListening(0),
            Command::StopListening(7),
            Command::StopListening(usize::MAX),
        ] {
            let (bytes, len) = cmd.encode();
            assert_eq!(len, Command::len(bytes[0]), "{cmd:?}");
            assert_eq!(Command::decode(&bytes[..len]), cmd);
        }
    }

    #[test]
    fn a_stop_is_one_byte_and_a_listener_s_stop_carries_its_index() {
        for (cmd, bytes) in [
            (Command::Drain, b"D"),
            (Command::Abort, b"A"),
            (Command::HandOff, b"H"),
        ] {
            let (out, len) = cmd.encode();
            assert_eq!(&out[..len], bytes);
        }
        let (out, len) = Command::StopListening(1).encode();
        assert_eq!(out[0], b'L');
        assert_eq!(&out[1..len], &1usize.to_le_bytes());
    }

    #[test]
    fn an_unknown_or_short_command_drains() {
        assert_eq!(Command::decode(b"?"), Command::Drain);
        assert_eq!(Command::decode(b""), Command::Drain);
        assert_eq!(Command::decode(b"L\x01"), Command::Drain, "an index cut short");
    }
}
