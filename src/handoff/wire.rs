//! The handoff conversation's messages, free of I/O. One message per SOCK_SEQPACKET packet;
//! the descriptors of a `LISTENERS` message ride in its SCM_RIGHTS control data, in the order
//! of its roles.

use crate::config::Layers;
use crate::sys::fdpass::MAX_FDS;

/// Version of the conversation this build speaks. Version 2 passes each listener's
/// [`Layers`]: version 1 did not, and a successor then served a TLS port in plaintext if its
/// flags said so.
pub(crate) const VERSION: u32 = 2;
/// Longest encoded message.
pub(crate) const MAX_LEN: usize = 512;

/// What a passed listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One shard's listener for a served address, and what it put before the protocol.
    Listener(Layers),
    /// The health-check listener.
    Health,
}

/// Each role's letter on the wire.
const CODES: [(u8, Role); 5] = [
    (
        b'L',
        Role::Listener(Layers {
            proxy: false,
            tls: false,
        }),
    ),
    (
        b'T',
        Role::Listener(Layers {
            proxy: false,
            tls: true,
        }),
    ),
    (
        b'P',
        Role::Listener(Layers {
            proxy: true,
            tls: false,
        }),
    ),
    (
        b'Q',
        Role::Listener(Layers {
            proxy: true,
            tls: true,
        }),
    ),
    (b'H', Role::Health),
];

impl Role {
    fn code(self) -> u8 {
        CODES.iter().find(|(_, r)| *r == self).map_or(b'?', |(c, _)| *c)
    }

    fn from_code(code: u8) -> Option<Self> {
        CODES.iter().find(|(c, _)| *c == code).map(|(_, r)| *r)
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// Successor → predecessor: send me your listening sockets.
    Takeover {
        /// The successor's conversation version.
        version: u32,
    },
    /// Predecessor → successor: these sockets (attached), one role each.
    Listeners(Vec<Role>),
    /// Predecessor → successor: every socket was sent.
    End,
    /// Predecessor → successor: no handoff, for this reason.
    Refused(String),
    /// Successor → predecessor: I am serving; stop accepting and drain.
    Drain,
    /// Predecessor → successor: accepting stopped, draining.
    Draining,
}

/// A packet that is not a message of this conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected handoff message {0:?} (is the other process a weft of another version?)")]
pub(crate) struct WireError(String);

impl Message {
    /// The packet for this message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let text = match self {
            Self::Takeover { version } => format!("TAKEOVER {version}"),
            Self::Listeners(roles) => {
                let codes: String = roles.iter().map(|r| char::from(r.code())).collect();
                format!("LISTENERS {codes}")
            }
            Self::End => "END".into(),
            Self::Refused(why) => format!("REFUSED {why}"),
            Self::Drain => "DRAIN".into(),
            Self::Draining => "DRAINING".into(),
        };
        let mut bytes = text.into_bytes();
        bytes.truncate(MAX_LEN);
        bytes
    }

    /// Parses a packet.
    pub(crate) fn decode(packet: &[u8]) -> Result<Self, WireError> {
        let bad = || WireError(String::from_utf8_lossy(&packet[..packet.len().min(64)]).into_owned());
        let text = std::str::from_utf8(packet).map_err(|_| bad())?;
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match (word, rest) {
            ("TAKEOVER", v) => v
                .parse()
                .map(|version| Self::Takeover { version })
                .map_err(|_| bad()),
            ("LISTENERS", codes) if !codes.is_empty() && codes.len() <= MAX_FDS => codes
                .bytes()
                .map(|c| Role::from_code(c).ok_or_else(bad))
                .collect::<Result<_, _>>()
                .map(Self::Listeners),
            ("END", "") => Ok(Self::End),
            ("REFUSED", why) => Ok(Self::Refused(why.to_owned())),
            ("DRAIN", "") => Ok(Self::Drain),
            ("DRAINING", "") => Ok(Self::Draining),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for m in [
            Message::Takeover { version: VERSION },
            Message::Listeners(vec![
                Role::Listener(Layers::default()),
                Role::Listener(Layers {
                    proxy: false,
                    tls: true,
                }),
                Role::Listener(Layers {
                    proxy: true,
                    tls: false,
                }),
                Role::Listener(Layers {
                    proxy: true,
                    tls: true,
                }),
                Role::Health,
            ]),
            Message::End,
            Message::Refused("the engine is stopping".into()),
            Message::Drain,
            Message::Draining,
        ] {
            assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{m:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let too_many = format!("LISTENERS {}", "L".repeat(MAX_FDS + 1));
        for bad in [
            b"".as_slice(),
            b"TAKEOVER",
            b"TAKEOVER x",
            b"LISTENERS ",
            b"LISTENERS LXH",
            b"LISTENERS L?",
            b"END now",
            b"\xff\xfe",
            b"HELLO",
            too_many.as_bytes(),
        ] {
            assert!(
                Message::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
