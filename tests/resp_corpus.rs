#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays the RESP parser's fuzz corpus (`fuzz/corpus/resp`) through the same checks as the
//! fuzz target: no input may panic, split feeding must agree with feeding whole, and every
//! request runs through the command parser and a keyspace without panicking.

#[path = "../fuzz/fuzz_targets/reply_check.rs"]
mod reply_check;
#[path = "../fuzz/fuzz_targets/resp_check.rs"]
mod resp_check;

mod util;

use resp_check::check;

#[test]
fn corpus_replays_without_panic() {
    util::replay_corpus("resp", 40, |data, step| {
        let outcome = check(data, step);
        (outcome.requests.len(), outcome.error.is_some())
    });
}

#[test]
fn generated_inputs_replay_without_panic() {
    // A deterministic xorshift stream of RESP-ish fragments, spliced at random.
    let fragments: [&[u8]; 14] = [
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"3",
        b"-1",
        b"SET",
        b"GET k",
        b"\"",
        b"'",
        b"\0",
        b"INCR n",
        b"MSET a 1 b 2",
    ];
    for (data, step) in spliced(&fragments, 0x9E37_79B9_7F4A_7C15) {
        check(&data, step);
    }
}

/// 2,000 inputs of up to 23 of `fragments`, picked by a deterministic xorshift stream from
/// `seed`, each with a chunk size of 1 to 7 bytes.
fn spliced(fragments: &[&[u8]], seed: u64) -> Vec<(Vec<u8>, usize)> {
    let mut x = seed;
    (0..2000)
        .map(|_| {
            let mut data = Vec::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(fragments[(x % fragments.len() as u64) as usize]);
            }
            (data, (x % 7) as usize + 1)
        })
        .collect()
}

/// The reply parser (a client's side) over the same corpus and over generated replies, nested
/// and spliced: no panic, the same replies however the bytes are split, every reply encodes
/// back to itself.
#[test]
fn replies_replay_without_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/resp");
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for step in [1, 2, 3, 7, 33] {
            reply_check::check(&data, step);
        }
    }
    let fragments: [&[u8]; 14] = [
        b"+OK\r\n",
        b"-ERR no\r\n",
        b":42\r\n",
        b":-7\r\n",
        b"$3\r\nabc\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*2\r\n",
        b"*0\r\n",
        b"$0\r\n\r\n",
        b"\r\n",
        b"$",
        b"*",
        b"x",
    ];
    let (mut replies, mut errors) = (0, 0);
    for (data, step) in spliced(&fragments, 0x2545_F491_4F6C_DD1D) {
        let (got, error) = reply_check::check(&data, step);
        replies += got.len();
        errors += usize::from(error.is_some());
    }
    assert!(replies > 0 && errors > 0, "{replies} replies, {errors} errors");
}
