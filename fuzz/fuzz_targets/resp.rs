#![no_main]
//! Fuzzes the RESP request parser, and the command parser and keyspace behind it: arbitrary
//! bytes, split arbitrarily (see `resp_check.rs`).

mod resp_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |&b| usize::from(b % 32) + 1);
    resp_check::check(data, step);
});
