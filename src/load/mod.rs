//! The load generator behind `weft load` and `weft demo`.
//!
//! I/O-free parts: [`workload`] (requests and how their responses end), [`response`] (HTTP
//! response reader), [`replies`] (RESP reply reader), [`matcher`] (raw framing), [`schedule`] (open-loop timing and the two
//! latencies), [`start`] (the agreed wall-clock start of several load processes), [`exchange`] (one connection's requests in flight), [`recorder`] (per-core
//! counts), [`aggregate`] (merging the cores' intervals) and [`report`] (summary, JSON).
//! The side that runs: `runner` (an engine of tasks, one shard per load core, and the main
//! thread's loop) and `conn` (each connection as a weft [`Protocol`](crate::Protocol) opened
//! with weft's client, [`connect_tcp`](crate::connect_tcp)); both reach the reactor only
//! through the engine's shard API, as any program built on weft does.

pub mod aggregate;
mod conn;
pub mod exchange;
pub mod matcher;
pub mod recorder;
pub mod replies;
pub mod report;
pub mod response;
pub mod runner;
pub mod schedule;
pub mod start;
pub mod workload;
