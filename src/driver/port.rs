//! Ports: per-shard SO_REUSEPORT listening sockets and their accept loops.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::GlommioError;
use glommio::net::{TcpListener, TcpStream};
use socket2::{Socket, Type};

use super::Counted;
use super::connection::Connection;
use super::handshake;
use super::shard::ShardCtx;
use super::tls::ServerTls;
use crate::addr::Address;
use crate::config::AcceptConfig;
use crate::error::{EngineError, InheritedError};
use crate::proto::accept::{
    AcceptEvent, AcceptSource, BurstSizer, LogLimiter, Reservation, accept_burst, errno_name,
};
use crate::proto::protocol::Factory;
use crate::proto::proxy::ProxyConfig;
use crate::proto::transport::Transport;
use crate::stats::ShardStats;
use crate::sys;

/// First burst size (Twisted's `numberAccepts` starts at 100).
const INITIAL_BURST: usize = 100;
/// One log line per accept-error kind per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A listening socket of one shard.
pub(crate) struct Listener {
    pub(crate) socket: Socket,
    /// Its bound address (a port 0 resolved).
    pub(crate) local: SocketAddr,
    /// The index of its address in the configuration's `listen`.
    pub(crate) index: usize,
}

/// The listening sockets of every shard.
pub(crate) struct Bound {
    /// The bound addresses, in configuration order.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Each shard's listeners, by shard index.
    pub(crate) per_shard: Vec<Vec<Listener>>,
    /// Why the migrate program (`AcceptConfig::migrate_queued`) could not be attached to a
    /// new group, if it could not.
    pub(crate) migrate_error: Option<io::Error>,
}

/// Gives every shard a listening socket for every configured address, all in one
/// SO_REUSEPORT group per address. Inherited sockets bound to an address are spread over the
/// shards first; a shard left without one binds a new socket. A port 0 is resolved by the
/// first socket and reused by the others. With `migrate`, each group this creates gets the
/// program that moves a closing listener's queue to the others. Each address comes with
/// whether it may join a group that already listens there (`ListenerConfig::share_port`);
/// one that may not, and inherited nothing, is checked to have no listener first.
pub(crate) fn bind_listeners(
    addrs: &[(SocketAddr, bool)],
    shards: usize,
    backlog: u32,
    migrate: bool,
    inherited: Vec<OwnedFd>,
) -> Result<Bound, EngineError> {
    let mut migrate_error = None;
    let mut adopted = inherited.into_iter().map(adopt).collect::<Result<Vec<_>, _>>()?;
    let mut per_shard: Vec<Vec<Listener>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bound_addrs = Vec::with_capacity(addrs.len());
    for (index, &(addr, share)) in addrs.iter().enumerate() {
        let (mine, rest): (Vec<_>, Vec<_>) = adopted
            .into_iter()
            .partition(|(local, _)| addr.port() != 0 && *local == addr);
        adopted = rest;
        if !share && mine.is_empty() {
            match sys::socket::has_listener(addr) {
                Ok(false) => {}
                Ok(true) => return Err(EngineError::AddressInUse(addr.into())),
                Err(e) => return Err(EngineError::cannot_listen(addr, e)),
            }
        }
        for (i, (local, socket)) in mine.into_iter().enumerate() {
            per_shard[i % shards.max(1)].push(Listener { socket, local, index });
        }
        let mut bound = addr;
        let mut attached = false;
        for sockets in per_shard.iter_mut() {
            if sockets.iter().any(|l| l.index == index) {
                continue;
            }
            let socket = sys::socket::listen_socket(bound, backlog)
                .map_err(|e| EngineError::cannot_listen(addr, e))?;
            if migrate && !attached {
                // Once per group: the program belongs to the group, not to a socket.
                attached = true;
                if let Err(e) = sys::socket::attach_migrate_program(socket.as_fd()) {
                    migrate_error.get_or_insert(e);
                }
            }
            if bound.port() == 0 {
                let local = socket.local_addr().ok().and_then(|a| a.as_socket());
                bound = local
                    .ok_or_else(|| EngineError::cannot_listen(addr, io::Error::other("no local address")))?;
            }
            sockets.push(Listener {
                socket,
                local: bound,
                index,
            });
        }
        bound_addrs.push(bound);
    }
    if let Some((local, _)) = adopted.first() {
        return Err(EngineError::Inherited(InheritedError::Unmatched((*local).into())));
    }
    Ok(Bound {
        addrs: bound_addrs,
        per_shard,
        migrate_error,
    })
}

/// Checks that an inherited descriptor is a listening TCP socket and makes it non-blocking.
fn adopt(fd: OwnedFd) -> Result<(SocketAddr, Socket), EngineError> {
    let raw = fd.as_raw_fd();
    let sock = socket2::SockRef::from(&fd);
    let stream = sock
        .r#type()
        .map_err(|source| InheritedError::NotASocket { fd: raw, source })?
        == Type::STREAM;
    let local = sock.local_addr().ok().and_then(|a| a.as_socket());
    let local = match local {
        Some(local) if stream && sys::socket::is_listening(fd.as_fd()) => local,
        _ => return Err(InheritedError::NotListening { fd: raw }.into()),
    };
    sock.set_nonblocking(true)
        .map_err(|source| InheritedError::Blocking { fd: raw, source })?;
    Ok((local, Socket::from(fd)))
}

/// Non-blocking `accept4` on the listening descriptor: the burst after a wake-up.
struct SyncAccept<'a> {
    listener: BorrowedFd<'a>,
}

impl AcceptSource for SyncAccept<'_> {
    type Conn = OwnedFd;

    fn accept(&mut self) -> io::Result<(OwnedFd, SocketAddr)> {
        sys::socket::accept(self.listener)
    }
}

/// Everything one port's accept loop needs.
pub(crate) struct Port<F: Factory> {
    pub(crate) listener: TcpListener,
    pub(crate) fd: RawFd,
    pub(crate) local: SocketAddr,
    pub(crate) shard: Rc<ShardCtx>,
    pub(crate) factory: Rc<RefCell<F>>,
    pub(crate) reservation: Rc<RefCell<dyn Reservation<OwnedFd>>>,
    pub(crate) config: AcceptConfig,
    /// Set on a listener that requires a PROXY protocol header.
    pub(crate) proxy: Option<Rc<ProxyConfig>>,
    /// Set on a TLS listener.
    pub(crate) tls: Option<Rc<ServerTls>>,
    /// Set by [`close`](Self::close): the accept loop ends at its next wake-up.
    pub(crate) closed: Cell<bool>,
    /// 1 while the accept loop runs.
    pub(crate) accepting: Cell<usize>,
}

impl<F: Factory> Port<F> {
    /// Accepts on the listener outside the reactor.
    fn sync_accept(&self) -> SyncAccept<'_> {
        // `fd` is `listener`'s, open for as long as the port lives.
        SyncAccept {
            listener: sys::fd::borrow_raw(self, self.fd),
        }
    }

    /// Stops accepting for good (a drain, or this listener stopped alone): serves the clients
    /// already queued, then shuts the listening socket down, so that the kernel refuses new
    /// connects and the accept loop wakes and ends. The socket closes when the port is
    /// dropped.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.accept_queued();
        // Our own listening descriptor, open while the port lives: shutdown(2) on a listener
        // makes the kernel refuse new connections and fails the accept in flight.
        sys::socket::shutdown_listener(sys::fd::borrow_raw(self, self.fd));
    }

    /// Accepts and serves every connection already queued on the listener, without waiting.
    /// Before the listener closes: these clients connected while it was open, so they are
    /// served (and drained) rather than reset with the queue.
    fn accept_queued(&self) {
        let mut src = self.sync_accept();
        // The queue holds at most about `backlog` connections.
        for _ in 0..self.config.backlog as usize + 16 {
            match src.accept() {
                Ok((conn, peer)) => self.admit(conn, peer),
                Err(_) => break,
            }
        }
    }

    /// Accepts until the listener fails for good, is closed, or the shard drains.
    pub(crate) async fn run(self: Rc<Self>) {
        let _accepting = Counted::new(&self.shard.accepting);
        let _running = Counted::new(&self.accepting);
        let mut sizer = BurstSizer::new(INITIAL_BURST, self.config.max_burst);
        let mut limiter = LogLimiter::new(LOG_INTERVAL);
        loop {
            // Wait for a queued connection without taking it: an accept in the ring would own
            // the next connection, and a process killed while it waits would lose it (with the
            // queue's migration on, every queued connection moves to a live listener).
            let ready = self.listener.readable().await;
            if self.closed.get() || self.shard.draining.get() {
                // The listener is closed, or the shard drains and its listener is closed or
                // handed to a successor that accepts on it now. What is queued is served by
                // `close` or the successor.
                return;
            }
            if let Err(e) = ready {
                let e = match e {
                    GlommioError::IoError(e) => e,
                    e => io::Error::other(e.to_string()),
                };
                self.shard.stats.accept_error(e.raw_os_error().unwrap_or(0));
                tracing::error!(
                    shard = self.shard.info.index,
                    listener = %Address::from(self.local),
                    "waiting for connections failed ({e}); this port stops accepting"
                );
                return;
            }
            let mut src = self.sync_accept();
            let burst = {
                let mut reservation = self.reservation.borrow_mut();
                accept_burst(&mut src, &mut *reservation, None, sizer.limit(), |conn, peer| {
                    self.admit(conn, peer)
                })
            };
            sizer.record(burst.accepted);
            // Logging and counting happen after the burst, when no descriptor is at stake.
            let now = Instant::now();
            for event in &burst.events {
                match *event {
                    AcceptEvent::Error(errno) => self.shard.stats.accept_error(errno),
                    AcceptEvent::EmfileRecovered(_) => {
                        ShardStats::add(&self.shard.stats.emfile_recoveries, 1)
                    }
                    AcceptEvent::ReserveFailed(_) => {}
                }
                if let Some(line) = limiter.admit(event, now) {
                    tracing::warn!(shard = self.shard.info.index, listener = %Address::from(self.local), "{line}");
                }
            }
            // Counts held back are told once their interval is over, at the next wake-up.
            for line in limiter.flush(now) {
                tracing::warn!(shard = self.shard.info.index, listener = %Address::from(self.local), "{line}");
            }
            if let Some(e) = burst.fatal {
                let errno = e.raw_os_error().unwrap_or(0);
                self.shard.stats.accept_error(errno);
                tracing::error!(
                    shard = self.shard.info.index,
                    listener = %Address::from(self.local),
                    "accept failed ({}: {e}); this port stops accepting",
                    errno_name(errno)
                );
                return;
            }
            if burst.backoff {
                glommio::timer::sleep(self.config.error_backoff).await;
                // A slot missing since may be free now, with nothing queued to wake the port.
                let mut reservation = self.reservation.borrow_mut();
                if reservation.missing() {
                    let _ = reservation.reserve();
                }
            }
            glommio::executor().yield_if_needed().await;
        }
    }

    /// Hands a new connection to a protocol, or closes it (shard at its cap, where the
    /// factory's overload answer is written first; factory refused; untrusted peer on a
    /// PROXY-protocol listener).
    fn admit(&self, conn: OwnedFd, peer: SocketAddr) {
        let shard = &self.shard;
        if let Some(cap) = self.config.max_conns_per_shard
            && shard.conns.borrow().len() + shard.handshakes.get() >= cap
        {
            ShardStats::add(&shard.stats.shed, 1);
            // Told why in plaintext only: a TLS client would read the answer as garbage.
            if self.tls.is_none()
                && let Ok(factory) = self.factory.try_borrow()
                && let Some(answer) = factory.overload_answer()
            {
                super::shed::refuse(shard, conn, answer);
            }
            return;
        }
        if let Some(proxy) = &self.proxy
            && !proxy.trusts(peer.ip())
        {
            // Closed before anything is read: only the balancers may speak first.
            ShardStats::add(&shard.stats.proxy_untrusted, 1);
            return;
        }
        // An accepted TCP socket we own; ownership moves on.
        let stream = sys::fd::adopt(conn);
        if self.proxy.is_none() && self.tls.is_none() {
            if let Some(conn) = establish(shard, &self.factory, stream, self.local, peer.into(), peer.into())
            {
                glommio::spawn_local(conn.run()).detach();
            }
            return;
        }
        let start = Start {
            shard: shard.clone(),
            factory: self.factory.clone(),
            stream,
            listener: self.local,
            real_peer: peer,
        };
        glommio::spawn_local(handshake::serve(start, self.proxy.clone(), self.tls.clone())).detach();
    }
}

/// An accepted connection on its way to a protocol.
pub(crate) struct Start<F: Factory> {
    pub(crate) shard: Rc<ShardCtx>,
    pub(crate) factory: Rc<RefCell<F>>,
    pub(crate) stream: TcpStream,
    /// The listener's address (the connection's local one unless it is a wildcard).
    pub(crate) listener: SocketAddr,
    pub(crate) real_peer: SocketAddr,
}

/// Builds the protocol for a connection whose peer is `peer` (the socket's, or the client a
/// PROXY header named) and registers it with the shard; `None` if the factory refused it, in
/// which case dropping the stream closes it.
pub(crate) fn establish<F: Factory>(
    shard: &Rc<ShardCtx>,
    factory: &RefCell<F>,
    stream: TcpStream,
    listener: SocketAddr,
    peer: Address,
    real_peer: Address,
) -> Option<Connection<F::Protocol>> {
    let Some(protocol) = super::build_protocol(factory, &peer) else {
        ShardStats::add(&shard.stats.refused, 1);
        return None;
    };
    let fd = sys::fd::borrow(&stream);
    let sock = socket2::SockRef::from(&fd);
    let config = &shard.config;
    if config.nodelay {
        let _ = sock.set_nodelay(true);
    }
    if let Some(n) = config.send_buffer {
        let _ = sock.set_send_buffer_size(n);
    }
    if let Some(n) = config.recv_buffer {
        let _ = sock.set_recv_buffer_size(n);
    }
    // A listener bound to one address gives every connection that local address; only a
    // wildcard listener needs to ask the kernel which one the peer reached.
    let local = if listener.ip().is_unspecified() {
        sock.local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(listener)
    } else {
        listener
    };
    let transport = Transport::proxied(
        stream.as_raw_fd(),
        local.into(),
        peer,
        real_peer,
        config.flow,
        Instant::now,
    );
    if let Some(k) = config.keepalive {
        let _ = transport.set_keepalive_params(k);
    }
    if config.user_timeout.is_some() {
        let _ = transport.set_user_timeout(config.user_timeout);
    }
    let key = shard.conns.borrow_mut().insert(transport.clone());
    ShardStats::add(&shard.stats.accepted, 1);
    Some(Connection::new(stream, protocol, transport, shard.clone(), key))
}
