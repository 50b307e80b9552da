#![no_main]
//! Fuzzes the HTTP request decoder (and the built-in protocol's head decoder): arbitrary
//! bytes, split arbitrarily (see `http_check.rs`).

mod http_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |&b| usize::from(b % 32) + 1);
    http_check::check(data, step);
});
