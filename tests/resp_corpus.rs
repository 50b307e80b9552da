#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays the RESP parser's fuzz corpus (`fuzz/corpus/resp`) through the same checks as the
//! fuzz target: no input may panic, split feeding must agree with feeding whole, and every
//! request runs through the command parser and a keyspace without panicking.

#[path = "../fuzz/fuzz_targets/resp_check.rs"]
mod resp_check;

use resp_check::check;

#[test]
fn corpus_replays_without_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/resp");
    let mut seen = 0;
    let (mut requests, mut errors) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        // Every chunk size up to 33, as the fuzz target picks them.
        for step in 1..=33 {
            let outcome = check(&data, step);
            requests += outcome.requests.len();
            errors += usize::from(outcome.error.is_some());
        }
        seen += 1;
    }
    assert!(seen >= 40, "corpus missing: {seen} files in {dir}");
    assert!(requests > 0 && errors > 0, "{requests} requests, {errors} errors");
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
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let mut data = Vec::new();
        for _ in 0..(x % 24) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(fragments[(x % fragments.len() as u64) as usize]);
        }
        check(&data, (x % 7) as usize + 1);
    }
}
