//! Ports: per-shard SO_REUSEPORT listening sockets and their accept loops.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::GlommioError;
use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::connection::Connection;
use super::shard::ShardCtx;
use crate::accept::{
    AcceptEvent, AcceptSource, BurstSizer, LogLimiter, Reservation, accept_burst, errno_name,
};
use crate::config::AcceptConfig;
use crate::stats::ShardStats;
use crate::{Address, EngineError, Factory, Transport};

/// First burst size (Twisted's `numberAccepts` starts at 100).
const INITIAL_BURST: usize = 100;
/// One log line per accept-error kind per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Creates one listening socket per shard for every configured address, all in one
/// SO_REUSEPORT group per address. A port 0 is resolved by the first socket and reused by the
/// others. Returns, per shard, `(socket, bound address)` pairs.
pub(crate) fn bind_listeners(
    addrs: &[SocketAddr],
    shards: usize,
    backlog: u32,
) -> Result<Vec<Vec<(Socket, SocketAddr)>>, EngineError> {
    let mut per_shard: Vec<Vec<(Socket, SocketAddr)>> = (0..shards).map(|_| Vec::new()).collect();
    for &addr in addrs {
        let mut bound = addr;
        for sockets in per_shard.iter_mut() {
            let sock = listen_socket(bound, backlog).map_err(|e| EngineError::cannot_listen(addr, e))?;
            if bound.port() == 0 {
                let local = sock.local_addr().ok().and_then(|a| a.as_socket());
                bound = local
                    .ok_or_else(|| EngineError::cannot_listen(addr, io::Error::other("no local address")))?;
            }
            sockets.push((sock, bound));
        }
    }
    Ok(per_shard)
}

fn listen_socket(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(SockProtocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}

/// An accepted socket, from the reactor's accept or from our own `accept4`.
enum Accepted {
    Stream(TcpStream),
    Fd(OwnedFd),
}

/// Non-blocking `accept4` on the listening descriptor: the burst after a wake-up.
struct SyncAccept {
    fd: RawFd,
}

impl AcceptSource for SyncAccept {
    type Conn = Accepted;

    fn accept(&mut self) -> io::Result<(Accepted, SocketAddr)> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` is large enough for any address and `len` says so.
        let fd = unsafe {
            libc::accept4(
                self.fd,
                storage.as_mut_ptr().cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the kernel filled `len` bytes of `storage`.
        let addr = unsafe { SockAddr::new(storage.assume_init(), len) };
        let peer = addr
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket"))?;
        Ok((Accepted::Fd(owned), peer))
    }
}

/// Everything one port's accept loop needs.
pub(crate) struct Port<F: Factory> {
    pub(crate) listener: TcpListener,
    pub(crate) fd: RawFd,
    pub(crate) local: SocketAddr,
    pub(crate) shard: Rc<ShardCtx>,
    pub(crate) factory: Rc<RefCell<F>>,
    pub(crate) reservation: Rc<RefCell<dyn Reservation>>,
    pub(crate) config: AcceptConfig,
}

impl<F: Factory> Port<F> {
    /// Accepts until the listener fails for good (or the task is dropped at shutdown).
    pub(crate) async fn run(self) {
        let mut sizer = BurstSizer::new(INITIAL_BURST, self.config.max_burst);
        let mut limiter = LogLimiter::new(LOG_INTERVAL);
        loop {
            let first = match self.listener.shared_accept().await {
                Ok(a) => {
                    let stream = a.bind_to_executor();
                    // A peer gone before we could ask its address is simply dropped.
                    stream
                        .peer_addr()
                        .ok()
                        .map(|peer| Ok((Accepted::Stream(stream), peer)))
                }
                Err(GlommioError::IoError(e)) => Some(Err(e)),
                Err(e) => Some(Err(io::Error::other(e.to_string()))),
            };
            let mut src = SyncAccept { fd: self.fd };
            let burst = {
                let mut reservation = self.reservation.borrow_mut();
                accept_burst(&mut src, &mut *reservation, first, sizer.limit(), |conn, peer| {
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
            }
            glommio::executor().yield_if_needed().await;
        }
    }

    /// Hands a new connection to a protocol, or closes it (shard at its cap, factory refused).
    fn admit(&self, conn: Accepted, peer: SocketAddr) {
        let shard = &self.shard;
        if let Some(cap) = self.config.max_conns_per_shard
            && shard.conns.borrow().len() >= cap
        {
            ShardStats::add(&shard.stats.shed, 1);
            return;
        }
        let peer = Address::from(peer);
        let Some(protocol) = self.factory.borrow_mut().build_protocol(&peer) else {
            ShardStats::add(&shard.stats.refused, 1);
            return;
        };
        let stream = match conn {
            Accepted::Stream(s) => s,
            // SAFETY: the descriptor is an accepted TCP socket we own; ownership moves on.
            Accepted::Fd(fd) => unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) },
        };
        let fd = super::borrow_fd(&stream);
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
        let local = if self.local.ip().is_unspecified() {
            sock.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(self.local)
        } else {
            self.local
        };
        let transport = Transport::new(stream.as_raw_fd(), local.into(), peer, config.flow);
        if let Some(k) = config.keepalive {
            let _ = transport.set_keepalive_params(k);
        }
        if config.user_timeout.is_some() {
            let _ = transport.set_user_timeout(config.user_timeout);
        }
        let key = shard.conns.borrow_mut().insert(transport.clone());
        shard.stats.opened();
        glommio::spawn_local(Connection::new(stream, protocol, transport, shard.clone(), key).run()).detach();
    }
}
