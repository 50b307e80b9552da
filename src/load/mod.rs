//! The load generator behind `weft load` and `weft demo`.
//!
//! I/O-free parts: [`workload`] (requests and how their responses end), [`response`] (HTTP
//! response reader), [`matcher`] (raw framing), [`schedule`] (open-loop timing and the two
//! latencies), [`exchange`] (one connection's requests in flight), [`recorder`] (per-core
//! counts), [`aggregate`] (merging the cores' intervals) and [`report`] (summary, JSON).
//! The glommio side: `runner` (one pinned reactor per core, the main thread's loop) and
//! `conn` (each connection as a weft [`Protocol`](crate::Protocol) opened with weft's client,
//! [`connect_tcp`](crate::connect_tcp)).

pub mod aggregate;
mod conn;
pub mod exchange;
pub mod matcher;
pub mod recorder;
pub mod report;
pub mod response;
pub mod runner;
pub mod schedule;
pub mod workload;
