//! The http reference protocol over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;

use util::{connect, engine, read_to_end};
use weft::protocols::Http;

fn status_codes(text: &str) -> Vec<String> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i + 9..i + 12].to_owned())
        .collect()
}

#[test]
fn sixty_four_pipelined_requests_get_ordered_responses() {
    let (_engine, addr) = engine(1, |_| Http::factory());
    let mut s = connect(addr);
    let mut batch = String::new();
    for i in 0..64 {
        let path = if i % 4 == 3 { "/nope" } else { "/" };
        batch.push_str(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    s.write_all(batch.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let codes = status_codes(&text);
    assert_eq!(codes.len(), 64);
    for (i, c) in codes.iter().enumerate() {
        assert_eq!(c, if i % 4 == 3 { "404" } else { "200" }, "response {i}");
    }
    assert_eq!(text.matches("Hello, World!").count(), 48);
}

#[test]
fn bad_input_gets_its_status_and_others_are_still_served() {
    let (_engine, addr) = engine(1, |_| Http::factory());
    // A keep-alive client that stays across all the bad ones.
    let mut good = connect(addr);
    let mut big_head = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    big_head.extend(std::iter::repeat_n(b'a', 16 * 1024));
    big_head.extend_from_slice(b"\r\n\r\n");
    let flood = vec![b'x'; 64 * 1024];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n".to_vec(), "400"),
        (big_head, "431"),
        (flood, "431"),
        (b"GET / HTTP/3.0\r\n\r\n".to_vec(), "505"),
        // RFC 9112: an HTTP/1.1 request names its Host, once.
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "400"),
    ];
    for (input, want) in cases {
        let mut s = connect(addr);
        // The server may close before it has read everything we send.
        let _ = s.write_all(&input);
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status_codes(&text), vec![want.to_owned()], "{text}");
        assert!(text.contains("Connection: close"));
        good.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let n = good.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    }
}

#[test]
fn http10_closes_after_the_response() {
    let (_engine, addr) = engine(1, |_| Http::factory());
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("Hello, World!"));
}
