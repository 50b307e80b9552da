//! The I/O-free core: what a service implements and what the driver runs it with, as plain
//! values and state machines that never touch a socket, a reactor, a thread or the clock.
//!
//! ```text
//!   proto (I/O-free)  ──run by──▶  driver (glommio)  ──calls──▶  sys (libc)
//! ```
//!
//! - `protocol`: the [`Protocol`](protocol::Protocol) and [`Factory`](protocol::Factory)
//!   traits a service implements;
//! - `transport`: a protocol's [`Transport`](transport::Transport), which only queues bytes
//!   and records requests (close, pause, deadline) for the driver to carry out, with its
//!   flow control and keepalive settings; `outbuf`, its write queue;
//! - `close`: why a connection ended ([`CloseReason`](close::CloseReason));
//! - `control`: the commands an engine's handle sends its shards, as bytes;
//! - `answer`: what becomes of a request answered by `codec::Answered`, an answer written
//!   whole or streamed in its turn;
//! - `drain`: the engine's drain barrier, which tells connections that follow the drain
//!   only once no shard has other work left;
//! - `accept`: the accept policy (bounded bursts, the errno policy, EMFILE recovery, log
//!   rate limits);
//! - `client`: connect errors, destinations and the connector's state machine;
//!   `reconnect`: the back-off and its jitter; `pipeline`: a pipelined client's calls
//!   matched with their replies in order, and why a call fails;
//! - `tls`: a connection's TLS session fed and drained by the driver (rustls, plaintext
//!   above, ciphertext below), the client's TLS settings and the handshake results;
//! - [`proxy`]: the PROXY protocol v1/v2 parser; [`hdr`]: latency histograms and their
//!   formats; [`http`]: HTTP/1.1 requests decoded and responses encoded (its `Date` reads
//!   the clock the driver gives its encoder).
//!
//! The driver feeds this module bytes, events and the time: the accept policy's log limiter
//! takes `now`, and a transport reads the clock the driver gave it. What this module calls
//! outside itself: the [`Address`](crate::addr::Address) value, and `sys::fd` for a
//! transport's socket options (borrowing the connection's descriptor for one option call).
//! `tests/layering.rs` keeps it so: no glommio, no threads, no clock reads, no `unsafe`.

#![forbid(unsafe_code)]

pub(crate) mod accept;
pub(crate) mod answer;
pub(crate) mod civil;
pub(crate) mod client;
pub(crate) mod close;
pub mod codec;
pub(crate) mod conn_state;
pub(crate) mod control;
pub(crate) mod drain;
pub(crate) mod eyeballs;
pub mod hdr;
pub mod http;
pub mod kv;
pub(crate) mod outbuf;
pub(crate) mod pipeline;
pub(crate) mod producer;
pub(crate) mod protocol;
pub mod proxy;
pub(crate) mod queue;
pub(crate) mod reconnect;
pub mod resp;
pub(crate) mod settings;
pub(crate) mod tls;
pub(crate) mod transport;
