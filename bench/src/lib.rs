//! Shared pieces of weft's benchmark harness: core placement, process limits, RSS sampling
//! and the JSON summary every load client writes.
//!
//! The binaries in `src/bin/` are the load clients that `weft load` does not cover
//! (connection churn, idle connections, accept storm) and weft's cross-shard call benchmark.
//! The peers weft is measured against are not here: they are standalone crates in
//! `bench/peers/`, each with its own Cargo.lock, built as their users build them.
//! `bench/run.sh` drives them all.

#![deny(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod client;
pub mod cores;
pub mod latency;
pub mod procfs;
pub mod summary;

pub use cores::{per_core, pin_current, resolve_cores};
pub use latency::Latency;
pub use summary::Summary;

use std::net::SocketAddr;
use std::time::Duration;

/// Parses a socket address in weft's syntax (`127.0.0.1:7000`, `[::1]:7000`).
///
/// # Errors
///
/// The parse error, as a line for the command line.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<weft::Address>()
        .map(|a| a.socket_addr())
        .map_err(|e| e.to_string())
}

/// Parses a duration in weft's syntax (`5s`, `500ms`, `2m`).
///
/// # Errors
///
/// The parse error, as a line for the command line.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    weft::config::parse_duration(s).map_err(|e| e.to_string())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (no privilege needed); returns the new
/// soft limit. Clients holding thousands of connections and servers accepting them need it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}
