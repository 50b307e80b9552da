//! The sharded-service examples, run as their users run them: a chat whose rooms span the
//! shards, a key-value service whose keys live on their owning shards, and TLS on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{connect, example_command, free_addr, sigterm, wait_exit, wait_listening};

/// Starts example `name` on `addr` and waits until it listens.
fn example(name: &str, addr: SocketAddr) -> Child {
    let mut child = example_command(name, &[addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("the examples are built by cargo test (cargo build --release --examples)");
    wait_listening(addr, &mut child);
    child
}

fn stop(mut child: Child) {
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(15)).success());
}

/// Reads lines until one satisfies `want` (bounded by a deadline).
fn read_until(r: &mut BufReader<TcpStream>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if want(line.trim_end()) {
            return line.trim_end().to_owned();
        }
    }
    panic!("no wanted line; last {line:?}");
}

#[test]
fn chat_rooms_span_the_shards() {
    let addr = free_addr();
    let child = example("chat", addr);
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..8)
        .map(|_| {
            let s = connect(addr);
            let r = BufReader::new(s.try_clone().unwrap());
            (s, r)
        })
        .collect();
    for (i, (s, r)) in clients.iter_mut().enumerate() {
        read_until(r, |l| l.starts_with("welcome"));
        write!(s, "/nick n{i}\n/join lobby\n").unwrap();
        // Each sees its own join, so it is in the room before the next one speaks.
        read_until(r, |l| l == format!("n{i}: joined"));
    }
    clients[0].0.write_all(b"hello everyone\n").unwrap();
    for (_, r) in &mut clients {
        read_until(r, |l| l == "n0: hello everyone");
    }
    drop(clients);
    stop(child);
}

#[test]
fn kv_keys_live_on_their_shards_and_pipelines_answer_in_order() {
    let addr = free_addr();
    let child = example("kv", addr);
    let mut writer = connect(addr);
    let mut reader = BufReader::new(writer.try_clone().unwrap());
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!("SET k{i} v{i}\n"));
    }
    writer.write_all(batch.as_bytes()).unwrap();
    for _ in 0..50 {
        assert_eq!(read_until(&mut reader, |_| true), "OK");
    }
    // Another connection (maybe another shard) reads them back, pipelined, in order.
    let mut other = connect(addr);
    let mut other_reader = BufReader::new(other.try_clone().unwrap());
    let mut batch = String::new();
    for i in (0..50).rev() {
        batch.push_str(&format!("GET k{i}\nDEL k{i}\n"));
    }
    batch.push_str("GET k7\nBOGUS\n");
    other.write_all(batch.as_bytes()).unwrap();
    for i in (0..50).rev() {
        assert_eq!(read_until(&mut other_reader, |_| true), format!("v{i}"));
        assert_eq!(read_until(&mut other_reader, |_| true), "1");
    }
    assert_eq!(read_until(&mut other_reader, |_| true), "(nil)");
    assert!(read_until(&mut other_reader, |_| true).starts_with("ERR"));
    drop((writer, reader, other, other_reader));
    stop(child);
}

#[test]
fn tls_example_echoes_over_tls_with_alpn() {
    let out = util::output_within(
        example_command("tls", &[])
            .spawn()
            .expect("the examples are built by cargo test"),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ALPN Some(\"http/1.1\"); hello over TLS (closed locally)"),
        "{text}"
    );
    assert!(
        text.contains("server: 1 TLS handshake(s) ok, 1 connection(s) served"),
        "{text}"
    );
}
