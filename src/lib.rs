//! # weft
//!
//! A thread-per-core, sharded TCP server engine: Twisted's `twisted.internet.tcp` model
//! (Port, Server, Protocol/Factory/Transport, the reserved descriptor for EMFILE, bounded
//! accept bursts) run the way the fastest servers run, with one glommio (io_uring) reactor
//! pinned to each core.
//!
//! ```text
//!   core 0                                core N
//!   ┌──────────────────────────────┐      ┌─────────────────────┐
//!   │ Port (SO_REUSEPORT listener) │      │ Port                │
//!   │   │ accept burst (bounded)   │      │   ...               │
//!   │   ▼                          │      │                     │
//!   │ Factory ──build──▶ Protocol  │      │ Factory, Protocols  │
//!   │                    ▲    │    │      │                     │
//!   │   data_received    │    ▼    │      │                     │
//!   │   Connection ◀── Transport   │      │                     │
//!   │ (driver: read→callback→flush)│      │                     │
//!   └──────────────────────────────┘      └─────────────────────┘
//! ```
//!
//! Each shard owns its listening sockets, its reserved descriptor, its factory and every
//! connection it accepts: nothing on the connection path crosses threads. Protocols are
//! plain Rust values driven by callbacks and never see a socket; they write through a
//! [`Transport`], which only queues bytes and commands for the driver.
//!
//! The client side is the same machinery pointed outwards: [`connect_tcp`] resolves a
//! [`Destination`], connects, and serves the new socket with the same driver and
//! [`Transport`]; its [`Connector`] reports to a [`ClientFactory`] and can reconnect with a
//! [`ReconnectPolicy`]. It runs inside an engine shard or on any bare glommio executor.
//!
//! ## Layers
//!
//! ```text
//!   proto/    I/O-free core: Protocol, Factory, Transport, the write queue, CloseReason,
//!     │       the accept policy, the client's states, back-off, the PROXY parser, the
//!     │       histograms. No glommio, no threads, no clock reads; #![forbid(unsafe_code)].
//!     ▼ run by
//!   driver/   glommio: the engine, shards, ports, connections, the connector, shard tasks.
//!     │       The only module that touches glommio; it feeds proto bytes, events and time.
//!     ▼ calls
//!   sys/      libc: every libc call and every unsafe block, each behind a safe function.
//! ```
//!
//! Around them: values (`addr`, `config`, `error`, `stats`, and [`tls`]: certificates, SNI,
//! ALPN, reload, client trust roots), the side threads and the service's lifecycle
//! (`metrics`, `health`, `handoff`, `service`), ready-made protocols ([`protocols`]) and the
//! load generator ([`load`]). No module folder imports one that imports it back;
//! `tests/layering.rs` checks that and the rules above.
//!
//! ```no_run
//! use weft::{Engine, EngineConfig, Protocol, Transport, factory_fn};
//!
//! /// Answers every chunk with its length.
//! struct Count;
//!
//! impl Protocol for Count {
//!     fn data_received(&mut self, data: &[u8], t: &Transport) {
//!         t.write(format!("{}\n", data.len()).as_bytes());
//!     }
//! }
//!
//! let engine = Engine::builder(EngineConfig::default())
//!     .listen("127.0.0.1:7000".parse::<std::net::SocketAddr>()?, |_shard| factory_fn(|_peer| Some(Count)))
//!     .start()?;
//! engine.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs, missing_debug_implementations)]

mod addr;
pub mod config;
mod driver;
mod error;
pub mod handoff;
pub mod health;
pub mod load;
pub mod logging;
pub mod metrics;
mod notify;
mod proto;
pub mod protocols;
mod responder;
mod service;
mod stats;
mod sys;
pub mod tls;

pub use addr::{Address, AddressError};
pub use config::{
    AcceptConfig, ConfigError, ConnectionConfig, Cores, CoresError, EngineConfig, FlowConfig, FlowError,
    InheritedListeners, Keepalive, Layers, ListenerConfig, MetricsConfig, ReactorConfig, RingFeatures,
};
pub use driver::connector::{AbortOnDrop, ClientFactory, Connector, connect_tcp, resolve};
pub use driver::engine::{Engine, EngineBuilder, EngineControl, EngineReport};
pub use driver::listener_stop::ListenerStop;
pub use error::{EngineError, InheritedError, IoUringError, ShardError, StopListeningError, bind_failure};
pub use proto::client::{
    ConnectError, ConnectOptions, ConnectorState, ConnectorStateError, Destination, DestinationError,
};
pub use proto::close::{CLOSE_LABELS, CloseReason};
pub use proto::producer::Producer;
pub use proto::protocol::{Factory, FnFactory, Protocol, ShardInfo, factory_fn};
pub use proto::reconnect::ReconnectPolicy;
pub use proto::transport::{IdleHold, Transport};
pub use proto::{hdr, http, kv, proxy, resp};

pub mod codec {
    //! Framing: a [`Decoder`] cuts the byte stream into frames, and [`Framed`] turns a
    //! [`FrameHandler`] (a protocol that receives whole frames) into a [`Protocol`](crate::Protocol), keeping the
    //! bytes of a partial frame between reads in a bounded [`InBuf`]. An [`Encoder`] is the
    //! writing half: [`Transport::write_frame`](crate::Transport::write_frame) encodes a frame straight into the connection's
    //! output, with no buffer of its own.
    //!
    //! In the spirit of tokio-util's `Decoder` and `Encoder`: `decode` takes one whole frame from
    //! the front of the buffer, or answers `Ok(None)` until more bytes arrive; `encode` appends a
    //! frame's bytes. [`LineDecoder`] and [`LineEncoder`] (Twisted's `LineReceiver` and its
    //! `sendLine`) are the ready-made ones; [`resp`](crate::resp) has RESP's.
    //!
    //! ```
    //! use weft::codec::{FrameHandler, Framed, LineDecoder, LineEncoder};
    //! use weft::Transport;
    //!
    //! /// Answers every line with its length, as a line.
    //! struct Lengths;
    //!
    //! impl FrameHandler for Lengths {
    //!     type Decoder = LineDecoder;
    //!     fn frame_received(&mut self, line: Vec<u8>, t: &Transport) {
    //!         let Ok(()) = t.write_frame(&mut LineEncoder::crlf(), line.len().to_string());
    //!     }
    //! }
    //!
    //! let protocol = Framed::new(LineDecoder::new(1024), Lengths);
    //! # let _ = protocol;
    //! ```
    //!
    //! [`Answered`] answers requests with async work, in order, for request/response protocols
    //! whose answers wait (on another shard, a timer, a backend).

    pub use crate::driver::answered::{Answered, ByRequest, MakeAnswer, WithTransport};
    pub use crate::proto::answer::{Answer, StreamClosed, StreamWriter, Streamed};
    pub use crate::proto::codec::*;
}
pub mod client {
    //! Calls to an upstream service from a shard: [`Pipeline`] keeps one persistent
    //! connection (made by [`connect_tcp`](crate::connect_tcp)'s [`Connector`](crate::Connector),
    //! remade by its [`ReconnectPolicy`](crate::ReconnectPolicy)), pipelines the requests of
    //! every caller on the shard over it, and matches the replies with their calls in order,
    //! for protocols that answer each request with one reply (HTTP/1.1, RESP, most line
    //! protocols). Calls are bounded and timed, and fail with a typed [`CallError`].
    //!
    //! A gateway makes one per shard in its listen closure and calls it from
    //! [`Answered`](crate::codec::Answered)'s answers: `examples/gateway.rs`.

    pub use crate::driver::pipeline::{Pipeline, PipelineOptions};
    pub use crate::proto::pipeline::{CallError, Outage};
}
pub use service::{IGNORED_SIGNALS, MIN_STATS_INTERVAL, RunningService, Service, ServiceError};
pub use stats::StatsSnapshot;

/// The shard the calling code runs on: which one it is, its state and counters, tasks and
/// timers that run on it without blocking it, and calls to the other shards' states.
pub mod shard {
    pub use crate::driver::mesh::{CallError, ShardHandle, invoke_on_all, owner_of, submit_to};
    pub use crate::driver::tasks::{
        Cancelled, Elapsed, Interval, JoinHandle, counters, current, drain_started, interval, is_draining,
        ring_features, sleep, spawn, state, timeout, until_drain, yield_now,
    };
    pub use crate::proto::queue::Queue;
}

/// The README's code, compiled by `cargo test --doc` so that it stays right.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
