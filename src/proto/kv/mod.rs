//! The key-value store behind `weft serve --proto kv`, free of I/O: requests to commands
//! ([`command`]), one shard's keys with expiry, memory accounting and eviction
//! ([`keyspace`], each key a [`record`]), which shard owns a key and how multi-key commands split and merge
//! ([`route`]), a connection's own commands ([`session`]), `INFO` ([`info`]) and how much a
//! connection may start while its answers wait to be sent ([`room`]).
//!
//! Each shard owns the keys that hash to it and runs their commands alone, without locks; the
//! protocol (`weft::protocols::Kv`) sends a command on another shard's key there and answers
//! in order. Everything here is tested without sockets, replies byte for byte against what
//! redis-server 7.0 answers.
//!
//! ```
//! use std::collections::hash_map::RandomState;
//! use weft::kv::command::parse;
//! use weft::kv::keyspace::{Keyspace, KeyspaceConfig};
//!
//! let mut shard = Keyspace::new(KeyspaceConfig::default(), RandomState::new(), 1);
//! let now = 1_700_000_000_000; // Unix time in milliseconds
//! let set = parse(vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec(), b"EX".to_vec(), b"10".to_vec()]);
//! assert_eq!(shard.execute(set.unwrap(), now).to_bytes(), b"+OK\r\n");
//! let ttl = parse(vec![b"TTL".to_vec(), b"k".to_vec()]).unwrap();
//! assert_eq!(shard.execute(ttl, now + 2_000).to_bytes(), b":8\r\n");
//! ```

pub mod command;
pub mod info;
pub mod keyspace;
pub mod record;
pub mod room;
pub mod route;
pub mod session;
