//! Opening a load connection: the one place that knows how.
//!
//! Until weft's client (`connect_tcp` and its Connector) is available, this connects with
//! glommio's `TcpStream` and runs the protocol with the engine's own connection driver, so
//! a load connection already uses weft's [`Transport`] and its read → `data_received` →
//! flush loop, exactly like a served connection. Switching to the client changes only this
//! module: [`run_connection`] keeps its contract (connect, run the protocol to its end, or
//! say why the connect failed).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use glommio::GlommioError;
use glommio::net::TcpStream;
use slab::Slab;

use super::aggregate::Bytes;
use super::recorder::ErrorKind;
use crate::config::ConnectionConfig;
use crate::driver::connection::Connection;
use crate::driver::shard::ShardCtx;
use crate::stats::ShardStats;
use crate::{Protocol, ShardInfo, Transport};

/// How long a load connection closing at the end of a run waits for the peer's EOF.
const LINGER: Duration = Duration::from_millis(200);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target refused it.
    #[error("connection refused")]
    Refused,
    /// It did not complete within the connect timeout.
    #[error("connect timed out")]
    TimedOut,
    /// Any other failure (unreachable, no route, out of descriptors...).
    #[error("{0}")]
    Failed(io::Error),
}

impl ConnectError {
    /// The error kind it is counted as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Refused => ErrorKind::ConnectRefused,
            Self::TimedOut => ErrorKind::ConnectTimeout,
            Self::Failed(_) => ErrorKind::ConnectFailed,
        }
    }

    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::TimedOut => Self::TimedOut,
            _ => Self::Failed(e),
        }
    }
}

/// The connection side of one load core: the state the connection driver shares between
/// the core's connections (one read buffer, byte counters, the registry).
pub(crate) struct ClientShard {
    ctx: Rc<ShardCtx>,
}

impl ClientShard {
    /// The client side of load core `index` (of `cores`) on CPU `core`.
    pub(crate) fn new(index: usize, core: usize, cores: usize) -> Self {
        let config = ConnectionConfig {
            linger: LINGER,
            ..ConnectionConfig::default()
        };
        let read_buf = RefCell::new(vec![0u8; config.read_size].into_boxed_slice());
        Self {
            ctx: Rc::new(ShardCtx {
                info: ShardInfo {
                    index,
                    core,
                    shards: cores,
                },
                config,
                read_buf,
                stats: ShardStats::default(),
                conns: RefCell::new(Slab::new()),
                draining: Cell::new(false),
            }),
        }
    }

    /// Bytes written and read by every connection of this core so far.
    pub(crate) fn bytes(&self) -> Bytes {
        Bytes {
            sent: self.ctx.stats.bytes_out.get(),
            received: self.ctx.stats.bytes_in.get(),
        }
    }
}

/// Connects to `target` within `timeout`, then runs `protocol` on the connection until
/// it ends (its `connection_lost` has run).
///
/// # Errors
///
/// The connect failed; the protocol saw nothing.
pub(crate) async fn run_connection<P: Protocol>(
    shard: &ClientShard,
    target: SocketAddr,
    timeout: Duration,
    protocol: P,
) -> Result<(), ConnectError> {
    let stream = TcpStream::connect_timeout(target, timeout)
        .await
        .map_err(|e| match e {
            GlommioError::IoError(e) => ConnectError::from_io(e),
            GlommioError::TimedOut(_) => ConnectError::TimedOut,
            other => ConnectError::Failed(io::Error::other(other.to_string())),
        })?;
    let ctx = &shard.ctx;
    let _ = stream.set_nodelay(ctx.config.nodelay);
    let local = stream.local_addr().map_err(|e| ConnectError::Failed(e.into()))?;
    let transport = Transport::new(stream.as_raw_fd(), local.into(), target.into(), ctx.config.flow);
    let key = ctx.conns.borrow_mut().insert(transport.clone());
    ctx.stats.opened();
    Connection::new(stream, protocol, transport, ctx.clone(), key)
        .run()
        .await;
    Ok(())
}
