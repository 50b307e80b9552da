#![no_main]
//! Fuzzes the RESP reply parser (a client's side): arbitrary bytes, split arbitrarily (see
//! `reply_check.rs`).

mod reply_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |&b| usize::from(b % 32) + 1);
    reply_check::check(data, step);
});
