//! The RESP parser's invariants on one input, shared by the fuzz target and the test that
//! replays the corpus (`tests/resp_corpus.rs`).
//!
//! The input is what a peer sends. Fed in chunks of any size it must decode to the same
//! requests and the same error as fed whole; nothing may panic; and every request it yields
//! goes through the command parser and runs on a small keyspace (with a memory limit and
//! eviction) or a session, which must not panic either.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

use weft::kv::command::{Target, parse};
use weft::kv::keyspace::{EvictionPolicy, Keyspace, KeyspaceConfig};
use weft::kv::session::{ServerFacts, Session};
use weft::resp::{Request, RespDecoder, RespError, RespLimits, RespVersion};

/// Small limits, so that inputs of fuzzing size reach them.
pub const LIMITS: RespLimits = RespLimits {
    max_bulk: 4096,
    max_inline: 256,
    max_request: 16 * 1024,
};

#[path = "feed.rs"]
mod feed;

/// What a peer's bytes decode to.
pub type Outcome = feed::Outcome<Request, RespError>;

/// Decodes `input` fed in chunks of `step` bytes.
pub fn decode(input: &[u8], step: usize) -> Outcome {
    let outcome = feed::feed(RespDecoder::new(LIMITS), input, step, |step| {
        LIMITS.max_request + LIMITS.max_inline + 2 * step + 64
    });
    assert!(
        outcome.requests.iter().all(|r| !r.is_empty()),
        "empty requests are skipped"
    );
    outcome
}

/// Checks the invariants on `data` fed in chunks of `step` (and whole); returns the outcome.
pub fn check(data: &[u8], step: usize) -> Outcome {
    let whole = decode(data, data.len().max(1));
    assert_eq!(decode(data, step), whole, "fed in {step}-byte chunks");
    if let Some(e) = &whole.error {
        let _ = (e.to_string(), e.reply());
    }
    let mut keyspace = Keyspace::new(
        KeyspaceConfig {
            maxmemory: 4096,
            policy: if data.len().is_multiple_of(2) {
                EvictionPolicy::AllKeysLru
            } else {
                EvictionPolicy::NoEviction
            },
            shard: Some((0, 2)),
            ..KeyspaceConfig::default()
        },
        BuildHasherDefault::<DefaultHasher>::default(),
        7,
    );
    let mut session = Session::new(1);
    let facts = ServerFacts::default();
    let now = 1_700_000_000_000;
    for (i, request) in whole.requests.iter().enumerate() {
        match parse(request.clone()) {
            Ok(cmd) if cmd.target() == Target::Connection => {
                let _ = session.execute(cmd, &facts, now);
            }
            Ok(cmd) => {
                let reply = keyspace.execute(cmd, now + i as i64 * 100);
                let _ = (reply.to_bytes(), reply.to_bytes_as(RespVersion::Resp3));
                // Memory is made (or refused) before a write: one request past the limit at most.
                let added: usize = request.iter().map(|a| a.len() + 64).sum();
                assert!(keyspace.used_memory() <= 4096 + added, "memory bound");
            }
            Err(reply) => assert!(reply.is_error()),
        }
    }
    keyspace.expire_cycle(now + 1_000_000, 4);
    whole
}
