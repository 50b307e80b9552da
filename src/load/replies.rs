//! Reads a stream of RESP2 replies (Redis): each whole reply answers one request, and an
//! error reply (`-ERR ...`) is a failed one, named by its first word.

use crate::proto::codec::{Decoder, InBuf};
use crate::proto::resp::{Reply, ReplyDecoder, ReplyError};

/// Why a stream of replies cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyFault {
    /// The bytes are not RESP2 replies.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A reply is the request itself: the target echoes what it is sent.
    #[error("the reply repeats the request: the target echoes what it is sent, it is not a Redis server")]
    Echo,
}

/// Reads a stream of replies, keeping the bytes of one that is still arriving.
#[derive(Debug, Default)]
pub struct ReplyReader {
    decoder: ReplyDecoder,
    pending: InBuf<'static>,
    /// The request's bytes: a reply that repeats them comes from an echo, not from Redis
    /// (which never answers a command with the command).
    request: Vec<u8>,
}

impl ReplyReader {
    /// A reader at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader of the replies to `request`, which tells an echo from Redis.
    pub fn for_request(request: &[u8]) -> Self {
        Self {
            request: request.to_vec(),
            ..Self::default()
        }
    }

    /// Reads `data`; calls `reply(error)` for each whole reply, in order, with the first word
    /// of an error reply (`None` for any other reply).
    ///
    /// # Errors
    ///
    /// The bytes are not RESP2 replies, or one is beyond the decoder's limits, or a reply
    /// repeats the request.
    pub fn feed(&mut self, data: &[u8], mut reply: impl FnMut(Option<String>)) -> Result<(), ReplyFault> {
        let (decoder, request) = (&mut self.decoder, &self.request);
        self.pending.decode_read(data, 0, |buf| {
            while !buf.is_empty() {
                // At the start of a reply only: within an array, element bytes may look alike.
                if !request.is_empty() && !decoder.in_frame() && buf.as_slice().starts_with(request) {
                    return Err(ReplyFault::Echo);
                }
                match decoder.decode(buf)? {
                    Some(Reply::Error(text)) => reply(Some(first_word(&text))),
                    Some(_) => reply(None),
                    None => break,
                }
            }
            Ok(())
        })
    }

    /// True while part of a reply has arrived.
    pub fn in_reply(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets a partial reply (a new connection).
    pub fn reset(&mut self) {
        self.pending = InBuf::new();
        self.decoder.reset();
    }
}

/// An error reply's first word, its kind by Redis's convention (`ERR`, `WRONGTYPE`).
fn first_word(text: &[u8]) -> String {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    String::from_utf8_lossy(word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_any_split_with_errors_named() {
        let stream: &[u8] =
            b"+PONG\r\n$3\r\nabc\r\n-WRONGTYPE Operation against a key\r\n*2\r\n:1\r\n$-1\r\n-ERR\r\n";
        let want = [
            None,
            None,
            Some("WRONGTYPE".to_owned()),
            None,
            Some("ERR".to_owned()),
        ];
        for split in 0..=stream.len() {
            let mut r = ReplyReader::new();
            let mut got = Vec::new();
            r.feed(&stream[..split], |e| got.push(e)).unwrap();
            r.feed(&stream[split..], |e| got.push(e)).unwrap();
            assert_eq!(got, want, "split at {split}");
            assert!(!r.in_reply());
        }
    }

    #[test]
    fn a_partial_reply_is_outstanding_until_reset_and_garbage_or_an_echo_is_an_error() {
        let mut r = ReplyReader::new();
        r.feed(b"$5\r\nab", |_| panic!("not whole")).unwrap();
        assert!(r.in_reply());
        r.reset();
        assert!(!r.in_reply());
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\n", |_| {}),
            Err(ReplyFault::Reply(ReplyError::UnknownType(b'H')))
        );
        let mut echoed = ReplyReader::for_request(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(echoed.feed(b"+PONG\r\n", |_| {}), Ok(()));
        assert_eq!(
            echoed.feed(b"*1\r\n$4\r\nPING\r\n", |_| {}),
            Err(ReplyFault::Echo)
        );
    }
}
