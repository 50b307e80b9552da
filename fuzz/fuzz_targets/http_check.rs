//! The HTTP request decoder's invariants on one input, shared by the fuzz target and the
//! test that replays generated inputs and the corpus (`tests/http_corpus.rs`).
//!
//! The input is what a peer sends. Fed in chunks of any size it must decode to the same
//! requests and the same error as fed whole; nothing may panic; the buffer stays bounded by
//! the limits; every error maps to a status that answers it; every request's answer encodes.
//! The built-in `weft serve --proto http` decoder, which shares the head parser and skips
//! bodies, must not panic either and must agree with itself however the input is split.

use weft::codec::Encoder;
use weft::http::{HttpError, HttpLimits, Request, RequestDecoder, Response, ResponseEncoder};
use weft::protocols::http::RequestDecoder as HeadDecoder;

/// Small limits, so that inputs of fuzzing size reach them.
pub const LIMITS: HttpLimits = HttpLimits {
    max_head: 512,
    max_headers: 8,
    max_body: 256,
};

#[path = "feed.rs"]
mod feed;

/// What a peer's bytes decode to.
pub type Outcome = feed::Outcome<Request, HttpError>;

/// Decodes `input` fed in chunks of `step` bytes.
pub fn decode(input: &[u8], step: usize) -> Outcome {
    let outcome = feed::feed(RequestDecoder::new(LIMITS), input, step, |step| {
        4096 + LIMITS.max_head + step
    });
    let largest = outcome.requests.iter().map(|r| r.body.len() as u64).max();
    assert!(largest.unwrap_or(0) <= LIMITS.max_body, "body over the limit");
    outcome
}

/// What the built-in decoder makes of `input` fed in chunks of `step` bytes: how many
/// heads it yields, and its error.
fn heads(input: &[u8], step: usize) -> (usize, Option<HttpError>) {
    let outcome = feed::feed(HeadDecoder::new(), input, step, |step| {
        4096 + LIMITS.max_head.max(8192) + step
    });
    (outcome.requests.len(), outcome.error)
}

/// Checks the invariants on `data` fed in chunks of `step` (and whole); returns the outcome.
pub fn check(data: &[u8], step: usize) -> Outcome {
    let whole = decode(data, data.len().max(1));
    assert_eq!(decode(data, step), whole, "fed in {step}-byte chunks");
    assert_eq!(
        heads(data, step),
        heads(data, data.len().max(1)),
        "built-in, {step}-byte chunks"
    );
    let mut encoder = ResponseEncoder::with_clock(|| 1_700_000_000);
    let mut out = Vec::new();
    if let Some(e) = &whole.error {
        assert!([400, 413, 431, 501, 505].contains(&e.status()), "{e}");
        encoder
            .encode(e.response(), &mut out)
            .expect("an error's answer encodes");
    }
    for request in &whole.requests {
        let _ = (request.keep_alive(), request.header("host"), request.query());
        let answer = Response::ok().with_body(request.body.clone()).answering(request);
        encoder.encode(answer, &mut out).expect("an answer encodes");
    }
    whole
}
