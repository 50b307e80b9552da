//! A small key-value service over lines: every key lives on the shard its hash names, other
//! shards reach it with `submit_to`, and a GET waits on a 5 ms timer first without blocking
//! its shard. Pipelined requests run and are answered in order; a client that sends faster
//! than they run is paused; at its EOF and at shutdown, requests received are answered before
//! the close.
//!
//! ```sh
//! cargo run --release --example kv -- 127.0.0.1:7200
//! printf 'SET a 1\nGET a\nDEL a\nGET a\n' | nc -q1 127.0.0.1 7200    # OK 1 1 (nil)
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
use weft::{EngineConfig, Service, factory_fn, shard};

/// One shard's part of the keys.
type Store = RefCell<HashMap<String, String>>;

/// Runs one request against the owning shard's store.
async fn execute(words: Vec<String>) -> String {
    let answer = match words.as_slice() {
        [cmd, key, value] if cmd.eq_ignore_ascii_case("SET") => {
            let (k, v) = (key.clone(), value.clone());
            shard::submit_to(shard::owner_of(key), move |s: &Store| {
                s.borrow_mut().insert(k, v).map(drop)
            })
            .await
            .map(|_| "OK".into())
        }
        [cmd, key] if cmd.eq_ignore_ascii_case("GET") => {
            shard::sleep(Duration::from_millis(5)).await;
            let k = key.clone();
            shard::submit_to(shard::owner_of(key), move |s: &Store| s.borrow().get(&k).cloned())
                .await
                .map(|v| v.unwrap_or("(nil)".into()))
        }
        [cmd, key] if cmd.eq_ignore_ascii_case("DEL") => {
            let k = key.clone();
            shard::submit_to(shard::owner_of(key), move |s: &Store| {
                s.borrow_mut().remove(&k).map_or("0", |_| "1").to_owned()
            })
            .await
        }
        _ => Ok("ERR expected SET k v, GET k or DEL k".into()),
    };
    answer.unwrap_or_else(|e| format!("ERR {e}"))
}

/// One line of words, answered in order (pipelined lines too): `Answered` runs each in the
/// connection's task, pauses a client that sends faster than that, and answers what was
/// received before it closes, at the client's EOF as at shutdown.
async fn answer(line: Vec<u8>) -> Answer<String> {
    let words = String::from_utf8_lossy(&line)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Answer::Send(execute(words).await)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:7200")
        .parse()?;
    Service::new(EngineConfig::default())
        .name("kv")
        .shard_state(|_| Store::default())
        .listen(listen, |_| {
            factory_fn(|_peer| {
                Some(Framed::new(
                    LineDecoder::new(4096),
                    Answered::new(LineEncoder::lf(), answer),
                ))
            })
        })
        .run()?;
    Ok(())
}
