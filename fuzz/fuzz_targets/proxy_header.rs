#![no_main]
//! Fuzzes the PROXY v1/v2 parser: arbitrary bytes, split arbitrarily (see `check.rs`).

mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check(data);
});
