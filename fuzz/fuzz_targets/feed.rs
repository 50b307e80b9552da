//! A decoder fed a peer's bytes in chunks, as reads deliver them: shared by the fuzz
//! targets' checks (`resp_check.rs`, `http_check.rs`).

use weft::codec::{Decoder, InBuf};

/// What a peer's bytes decode to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<F, E> {
    /// The frames, in order.
    pub requests: Vec<F>,
    /// The error that ended decoding, if any.
    pub error: Option<E>,
}

/// Decodes `input` with `decoder`, fed in chunks of `step` bytes, as `Framed` does (never an
/// empty buffer); after each chunk at most `bound(step)` bytes may stay buffered.
pub fn feed<D: Decoder>(
    mut decoder: D,
    input: &[u8],
    step: usize,
    bound: impl Fn(usize) -> usize,
) -> Outcome<D::Frame, D::Error> {
    let mut buf = InBuf::new();
    let mut requests = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        buf.extend(chunk);
        while !buf.is_empty() {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => requests.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        requests,
                        error: Some(error),
                    };
                }
            }
        }
        assert!(buf.len() <= bound(step), "bounded buffer: {} bytes", buf.len());
    }
    Outcome {
        requests,
        error: None,
    }
}
