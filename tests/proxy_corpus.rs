#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays the PROXY parser's fuzz corpus (`fuzz/corpus/proxy_header`) through the same
//! checks as the fuzz target: no input may panic, and split feeding must agree with parsing
//! whole.

#[path = "../fuzz/fuzz_targets/check.rs"]
mod check;

use check::{Outcome, check};

#[test]
fn corpus_replays_without_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/proxy_header");
    let mut seen = 0;
    let (mut headers, mut rejected) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // Every split of every input, not only the one its first byte picks.
        for split in 0..32u8 {
            let mut input = data.clone();
            if let Some(first) = input.first_mut() {
                *first = split;
            }
            match check(&input) {
                Outcome::Header(..) => headers += 1,
                Outcome::Rejected(_) => rejected += 1,
                Outcome::Incomplete => {}
            }
        }
        seen += 1;
    }
    assert!(seen >= 20, "corpus missing: {seen} files in {dir}");
    assert!(
        headers > 0 && rejected > 0,
        "{headers} headers, {rejected} rejections"
    );
}
