//! The PROXY parser's invariants on one input, shared by the fuzz target and the test that
//! replays the corpus (`tests/proxy_corpus.rs`).
//!
//! The first byte picks how the rest is split into chunks (1 to 32 bytes); the rest is what a
//! peer sends. Feeding it in chunks, to `ProxyDecoder::feed` or through an `InBuf` as the
//! handshake does, must agree with parsing it whole: the same header of the same length, the
//! same error, or both waiting for more. Nothing may panic.

use weft::codec::{Decoder, InBuf};
use weft::proxy::{DEFAULT_MAX_HEADER, Parsed, ProxyDecoder, ProxyError, ProxyHeader, parse};

/// What a peer's bytes amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A header and its exact length.
    Header(ProxyHeader, usize),
    /// Rejected.
    Rejected(ProxyError),
    /// Valid so far.
    Incomplete,
}

/// Checks the invariants on `data`; returns the outcome.
pub fn check(data: &[u8]) -> Outcome {
    let Some((&split, input)) = data.split_first() else {
        return Outcome::Incomplete;
    };
    let step = usize::from(split % 32) + 1;
    let whole = match parse(input, DEFAULT_MAX_HEADER) {
        Ok(Parsed::Complete { header, len }) => {
            assert!(len <= input.len() && len <= DEFAULT_MAX_HEADER.max(107));
            Outcome::Header(header, len)
        }
        Ok(Parsed::Incomplete) => Outcome::Incomplete,
        Err(e) => Outcome::Rejected(e),
    };
    let mut decoder = ProxyDecoder::new(DEFAULT_MAX_HEADER);
    let mut fed = 0;
    let mut split_outcome = Outcome::Incomplete;
    for chunk in input.chunks(step) {
        match decoder.feed(chunk) {
            Ok(Some(done)) => {
                assert!(done.consumed <= chunk.len());
                split_outcome = Outcome::Header(done.header, fed + done.consumed);
                break;
            }
            Ok(None) => fed += chunk.len(),
            Err(e) => {
                split_outcome = Outcome::Rejected(e);
                break;
            }
        }
    }
    assert_eq!(whole, split_outcome, "split into {step}-byte chunks");
    let mut decoder = ProxyDecoder::new(DEFAULT_MAX_HEADER);
    let mut buf = InBuf::new();
    let mut fed = 0;
    let mut decoded = Outcome::Incomplete;
    for chunk in input.chunks(step) {
        buf.extend(chunk);
        fed += chunk.len();
        match decoder.decode(&mut buf) {
            Ok(Some(header)) => {
                decoded = Outcome::Header(header, fed - buf.len());
                break;
            }
            Ok(None) => assert!(buf.len() < decoder.limit()),
            Err(e) => {
                decoded = Outcome::Rejected(e);
                break;
            }
        }
    }
    assert_eq!(whole, decoded, "decoded from {step}-byte reads");
    whole
}
