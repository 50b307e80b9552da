//! The RESP reply parser's invariants on one input, shared by the fuzz target and the test
//! that replays the corpus (`tests/resp_corpus.rs`).
//!
//! The input is what a server sends a client. Fed in chunks of any size it must decode to the
//! same replies and the same error as fed whole; nothing may panic; the buffer it waits on
//! stays within the limits; and every reply it yields encodes back to bytes that decode to it.

use weft::codec::{Decoder, InBuf};
use weft::resp::{Reply, ReplyDecoder, ReplyError, RespLimits};

/// Small limits, so that inputs of fuzzing size reach them.
pub const LIMITS: RespLimits = RespLimits {
    max_bulk: 4096,
    max_inline: 256,
    max_request: 16 * 1024,
};

/// Decodes `input` fed in chunks of `step` bytes: the replies, and the error that ended it.
pub fn decode(input: &[u8], step: usize) -> (Vec<Reply>, Option<ReplyError>) {
    let mut decoder = ReplyDecoder::new(LIMITS);
    let mut buf = InBuf::new();
    let mut replies = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        buf.extend(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
        assert!(buf.len() <= LIMITS.max_request + step, "bounded buffer");
    }
    (replies, None)
}

/// Checks the invariants on `data` fed in chunks of `step` (and whole); returns the outcome.
pub fn check(data: &[u8], step: usize) -> (Vec<Reply>, Option<ReplyError>) {
    let whole = decode(data, data.len().max(1));
    assert_eq!(decode(data, step), whole, "fed in {step}-byte chunks");
    if let Some(e) = &whole.1 {
        let _ = e.to_string();
    }
    for reply in &whole.0 {
        let again = decode(&reply.to_bytes(), 1).0;
        assert_eq!(again.len(), 1, "{reply:?} encodes to one reply");
        // Status and error lines lose what cannot be written in a line (CR, LF, invalid
        // UTF-8) when encoded; everything else comes back equal.
        if !matches!(reply, Reply::Status(_) | Reply::Error(_)) {
            assert_eq!(&again[0], reply);
        }
    }
    whole
}
