#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays the HTTP decoder's fuzz corpus (`fuzz/corpus/http`) and generated inputs through
//! the same checks as the fuzz target (`fuzz/fuzz_targets/http_check.rs`): no input may
//! panic, split feeding must agree with feeding whole, buffers stay bounded, every error has
//! its status and every answer encodes.

#[path = "../fuzz/fuzz_targets/http_check.rs"]
mod http_check;

mod util;

use http_check::check;

#[test]
fn corpus_replays_without_panic() {
    util::replay_corpus("http", 10, |data, step| {
        let outcome = check(data, step);
        (outcome.requests.len(), outcome.error.is_some())
    });
}

#[test]
fn generated_inputs_replay_without_panic() {
    // Requests spliced from HTTP-ish fragments by a deterministic xorshift stream: a request
    // line, headers, the blank line, a body, each now and then replaced by noise.
    let lines: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"POST /c?q HTTP/1.1\r\nHost: h\r\n",
        b"HEAD / HTTP/1.0\r\n",
        b"GET / HTTP/2.0\r\n",
        b"PUT /x HTTP/1.1\n",
    ];
    let headers: [&[u8]; 10] = [
        b"Accept: */*\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 300\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b" folded\r\n",
        b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"Bad header\r\n",
    ];
    let bodies: [&[u8]; 8] = [
        b"abc",
        b"3\r\nabc\r\n",
        b"3;x=y\r\nabc\r\n",
        b"0\r\n\r\n",
        b"0\r\nT: v\r\n\r\n",
        b"fffffffff\r\n",
        b"1\nx\r\n",
        b"",
    ];
    let noise: [&[u8]; 5] = [b"\r", b"\n", b":", b"\0", b"x"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (mut requests, mut errors) = (0, 0);
    for _ in 0..3000 {
        let mut data = Vec::new();
        for _ in 0..next(4) + 1 {
            data.extend_from_slice(lines[next(lines.len())]);
            for _ in 0..next(3) {
                data.extend_from_slice(headers[next(headers.len())]);
            }
            data.extend_from_slice(b"\r\n");
            for _ in 0..next(3) {
                data.extend_from_slice(bodies[next(bodies.len())]);
            }
            if next(8) == 0 {
                data.extend_from_slice(noise[next(noise.len())]);
            }
        }
        let outcome = check(&data, next(7) + 1);
        requests += outcome.requests.len();
        errors += usize::from(outcome.error.is_some());
    }
    assert!(
        requests > 1000 && errors > 100,
        "{requests} requests, {errors} errors"
    );
}
