//! Zero-downtime restart: a new weft process takes over the listening sockets of the running
//! one, which then drains and exits (HAProxy's `-x` with `expose-fd listeners`, Envoy's hot
//! restart).
//!
//! The running process serves handoffs on a Unix socket ([`HandoffServer`]). A successor
//! ([`Takeover`]) connects, receives every listening socket over SCM_RIGHTS (each shard's, and
//! the health check's), starts serving on them, and only then says `DRAIN`. Until that word
//! both processes accept from the same kernel queues, and after it the old one stops accepting
//! without closing anything: no client is refused or reset at any moment. A successor that
//! fails to start just disconnects, and the running process carries on as if nothing happened.
//!
//! Each listening socket comes with its [`Layers`] (a letter: `L` plain, `T`
//! TLS, `P` PROXY header, `Q` both; `H` is the health check), so that the successor serves
//! every port as the running process did: [`Service`](crate::Service) refuses to start when a
//! port taken over would change its role (a TLS port served in plaintext, say).
//!
//! ```text
//!   successor                         running weft
//!   TAKEOVER 2            ──────────▶
//!                         ◀──────────  LISTENERS LT…H  + descriptors (SCM_RIGHTS)
//!                         ◀──────────  END
//!   (starts its engine on them, serves)
//!   DRAIN                 ──────────▶  stops accepting, drains its connections, exits
//!                         ◀──────────  DRAINING
//! ```
//!
//! Only a process of the same user (or root) may take over: the peer's credentials are
//! checked, and the socket file is created with mode 0600.

mod wire;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
pub use wire::Role;
use wire::{MAX_LEN, Message, VERSION};

use crate::config::Layers;
use crate::driver::engine::EngineControl;
use crate::health::HealthCheck;
use crate::sys::fdpass::{self, MAX_FDS};
use crate::sys::poll::wait_for_accept;
use crate::sys::process::effective_uid;
use crate::sys::socket::{local_ip_addr, peer_uid};

/// How long either side waits for the other's next message during the exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the running process waits for a successor to start serving and say `DRAIN`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a handoff failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The handoff socket could not be reached.
    #[error(
        "cannot reach a running weft at {path}: {source} (start the running one with \
         --handoff-socket {path})"
    )]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The handoff socket could not be created.
    #[error("cannot serve handoffs on {}: {source}; {}", path.display(), bind_hint(source))]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The conversation failed on the wire.
    #[error("handoff failed: {0}")]
    Io(#[from] io::Error),
    /// The other side said something out of turn.
    #[error("handoff failed: {0}")]
    Protocol(String),
    /// The running process declined.
    #[error("the running weft refused the handoff: {0}")]
    Refused(String),
}

impl From<wire::WireError> for HandoffError {
    fn from(e: wire::WireError) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// What to do when the handoff socket cannot be created beside its path.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => {
            "its directory does not exist: create it (systemd: RuntimeDirectory=) or give \
             another path"
        }
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "this user may not create files in its directory: give a directory it owns \
             (systemd: RuntimeDirectory=)"
        }
        _ if e.kind() == io::ErrorKind::InvalidInput => {
            "a Unix socket path is at most 107 bytes, and weft binds PATH.PID.tmp first: give a \
             shorter path"
        }
        _ => "give a path in a directory this user may write",
    }
}

fn send(sock: &Socket, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    fdpass::send(sock.as_fd(), &msg.encode(), fds)
}

/// The next message and its descriptors, or `None` at the peer's EOF.
fn recv(sock: &Socket) -> Result<Option<(Message, Vec<OwnedFd>)>, HandoffError> {
    let mut buf = [0u8; MAX_LEN];
    let (n, fds) = fdpass::recv(sock.as_fd(), &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((Message::decode(&buf[..n])?, fds)))
}

/// Serves handoffs to a successor on a Unix socket, for as long as it lives or until one
/// succeeds.
#[derive(Debug)]
pub struct HandoffServer {
    path: PathBuf,
    /// Device and inode of the socket file this server created.
    file: (u64, u64),
    /// Dropping this end stops the thread.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl HandoffServer {
    /// Creates the socket at `path` (atomically replacing a stale one, or a predecessor's), and
    /// lends `engine`'s listening sockets, and `health`'s, to the first successor that asks.
    /// When the successor says `DRAIN`, the health check stops answering and the engine
    /// hands off ([`EngineControl::hand_off`]). [`prepare`](Self::prepare) and
    /// [`PreparedHandoff::place`] in one.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Bind`] if the socket cannot be created.
    pub fn start(
        path: impl Into<PathBuf>,
        engine: EngineControl,
        health: Option<Arc<HealthCheck>>,
    ) -> Result<Self, HandoffError> {
        Self::prepare(path)?.place(engine, health)
    }

    /// Creates the socket beside `path`, listening, without putting it in place yet: a
    /// successor that takes over prepares its own before it tells its predecessor to drain,
    /// and places it after, so that a failure to create it leaves the predecessor serving and
    /// a successor that dies before the drain leaves the predecessor's socket where it was.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Bind`] if the socket cannot be created.
    pub fn prepare(path: impl Into<PathBuf>) -> Result<PreparedHandoff, HandoffError> {
        let path = path.into();
        let bind_err = |source| HandoffError::Bind {
            path: path.clone(),
            source,
        };
        let mut temp = path.clone().into_os_string();
        temp.push(format!(".{}.tmp", std::process::id()));
        let temp = PathBuf::from(temp);
        let _ = fs::remove_file(&temp);
        let listener = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).map_err(bind_err)?;
        listener
            .bind(&SockAddr::unix(&temp).map_err(bind_err)?)
            .map_err(bind_err)?;
        let prepared = PreparedHandoff { path, temp, listener };
        fs::set_permissions(&prepared.temp, fs::Permissions::from_mode(0o600))
            .and_then(|()| prepared.listener.listen(8))
            .map_err(|source| HandoffError::Bind {
                path: prepared.path.clone(),
                source,
            })?;
        Ok(prepared)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A handoff socket created and listening beside its path, not in place yet (see
/// [`HandoffServer::prepare`]); dropping it removes it.
#[derive(Debug)]
pub struct PreparedHandoff {
    path: PathBuf,
    temp: PathBuf,
    listener: Socket,
}

impl PreparedHandoff {
    /// Puts the socket at its path (atomically replacing what was there) and serves
    /// handoffs on it, as [`HandoffServer::start`] does.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Bind`] if the socket cannot be moved into place or served.
    pub fn place(
        self,
        engine: EngineControl,
        health: Option<Arc<HealthCheck>>,
    ) -> Result<HandoffServer, HandoffError> {
        let bind_err = |source| HandoffError::Bind {
            path: self.path.clone(),
            source,
        };
        // Everything that may fail first: the path changes last, so a failure leaves it to
        // whoever held it (dropping the server stops its thread and removes no file).
        let (stop, stopped) = UnixStream::pair().map_err(bind_err)?;
        let listener = self.listener.try_clone().map_err(bind_err)?;
        let thread = std::thread::Builder::new()
            .name("weft-handoff".into())
            .spawn(move || serve(&listener, &stopped, &engine, health.as_deref()))
            .map_err(bind_err)?;
        let mut server = HandoffServer {
            path: self.path.clone(),
            file: (0, 0),
            stop: Some(stop),
            thread: Some(thread),
        };
        let meta = fs::rename(&self.temp, &self.path)
            .and_then(|()| fs::metadata(&self.path))
            .map_err(bind_err)?;
        server.file = (meta.dev(), meta.ino());
        Ok(server)
    }
}

impl Drop for PreparedHandoff {
    fn drop(&mut self) {
        // Gone already once placed.
        let _ = fs::remove_file(&self.temp);
    }
}

impl Drop for HandoffServer {
    /// Stops serving handoffs, and removes the socket file unless a successor replaced it.
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Accepts successors until one takes over or the server stops.
fn serve(listener: &Socket, stopped: &UnixStream, engine: &EngineControl, health: Option<&HealthCheck>) {
    loop {
        match wait_for_accept(listener.as_fd(), stopped.as_fd()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!("handoff server stopped: {e}");
                return;
            }
        }
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        if !same_user(&conn) {
            tracing::warn!("handoff refused: the successor runs as another user");
            let _ = send(
                &conn,
                &Message::Refused("the successor runs as another user".into()),
                &[],
            );
            continue;
        }
        match lend(&conn, engine, health) {
            Ok(true) => {
                tracing::info!("handed the listeners over; draining");
                return;
            }
            Ok(false) => tracing::warn!("a successor took the listeners but gave up before serving"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

/// True if the peer runs as this process's user, or as root.
fn same_user(conn: &Socket) -> bool {
    peer_uid(conn.as_fd()).is_ok_and(|uid| uid == effective_uid() || uid == 0)
}

/// One conversation with a successor; `Ok(true)` once it serves and this engine hands off.
fn lend(conn: &Socket, engine: &EngineControl, health: Option<&HealthCheck>) -> Result<bool, HandoffError> {
    conn.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    conn.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    match recv(conn)? {
        Some((Message::Takeover { version: VERSION }, _)) => {}
        Some((Message::Takeover { version }, _)) => {
            let why = format!("conversation version {version} is not {VERSION}");
            send(conn, &Message::Refused(why.clone()), &[])?;
            return Err(HandoffError::Refused(why));
        }
        Some((other, _)) => {
            return Err(HandoffError::Protocol(format!(
                "expected TAKEOVER, got {other:?}"
            )));
        }
        None => return Ok(false),
    }
    let lent = engine.with_listeners(|fds| -> io::Result<()> {
        let mut items: Vec<(Role, BorrowedFd<'_>)> = fds
            .iter()
            .map(|(fd, layers)| (Role::Listener(*layers), *fd))
            .collect();
        if let Some(h) = health {
            items.push((Role::Health, h.listener()));
        }
        for chunk in items.chunks(MAX_FDS) {
            let roles = chunk.iter().map(|(r, _)| *r).collect();
            let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| *fd).collect();
            send(conn, &Message::Listeners(roles), &fds)?;
        }
        send(conn, &Message::End, &[])
    });
    match lent {
        Some(sent) => sent?,
        None => {
            send(
                conn,
                &Message::Refused("this weft is already stopping".into()),
                &[],
            )?;
            return Ok(false);
        }
    }
    conn.set_read_timeout(Some(START_TIMEOUT))?;
    match recv(conn) {
        Ok(Some((Message::Drain, _))) => {
            if let Some(h) = health {
                h.stop();
            }
            engine.hand_off();
            let _ = send(conn, &Message::Draining, &[]);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Ok(Some((other, _))) => Err(HandoffError::Protocol(format!("expected DRAIN, got {other:?}"))),
        Err(e) => Err(e),
    }
}

/// A successor's side of a handoff: the sockets received, and the connection on which it
/// tells the running process to drain.
#[derive(Debug)]
pub struct Takeover {
    conn: Socket,
    listeners: Vec<OwnedFd>,
    /// Each address taken over, with what its listener put before the protocol.
    roles: Vec<(SocketAddr, Layers)>,
    health: Option<OwnedFd>,
}

impl Takeover {
    /// Asks the weft serving handoffs at `path` for its listening sockets. It keeps serving
    /// on them until [`finish`](Self::finish); dropping the `Takeover` instead cancels.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Connect`] if nothing serves handoffs there; the other variants if the
    /// conversation fails or the running process refuses.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, HandoffError> {
        let path = path.as_ref();
        let connect_err = |source| HandoffError::Connect {
            path: path.to_owned(),
            source,
        };
        let conn = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).map_err(connect_err)?;
        conn.connect(&SockAddr::unix(path).map_err(connect_err)?)
            .map_err(connect_err)?;
        conn.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        conn.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        send(&conn, &Message::Takeover { version: VERSION }, &[])?;
        let mut listeners = Vec::new();
        let mut taken: Vec<(SocketAddr, Layers)> = Vec::new();
        let mut health = None;
        loop {
            match recv(&conn)? {
                Some((Message::Listeners(roles), fds)) if roles.len() == fds.len() => {
                    for (role, fd) in roles.into_iter().zip(fds) {
                        match role {
                            Role::Listener(layers) => {
                                if let Some(addr) = local_ip_addr(fd.as_fd())
                                    && !taken.iter().any(|(a, _)| *a == addr)
                                {
                                    taken.push((addr, layers));
                                }
                                listeners.push(fd);
                            }
                            Role::Health => health = Some(fd),
                        }
                    }
                }
                Some((Message::End, _)) => break,
                Some((Message::Refused(why), _)) => return Err(HandoffError::Refused(why)),
                Some((other, _)) => {
                    return Err(HandoffError::Protocol(format!(
                        "expected LISTENERS or END, got {other:?}"
                    )));
                }
                None => return Err(HandoffError::Protocol("the running weft hung up".into())),
            }
        }
        Ok(Self {
            conn,
            listeners,
            roles: taken,
            health,
        })
    }

    /// Takes the served listening sockets (every shard's), for
    /// [`InheritedListeners`](crate::config::InheritedListeners).
    pub fn take_listeners(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.listeners)
    }

    /// Each address taken over, in order, with what its listener put before the protocol
    /// (a PROXY header, TLS): the successor must serve it the same way.
    pub fn roles(&self) -> &[(SocketAddr, Layers)] {
        &self.roles
    }

    /// Where the running process's health check listens, if it had one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        let fd = self.health.as_ref()?;
        socket2::SockRef::from(fd).local_addr().ok()?.as_socket()
    }

    /// Takes the health check's listening socket, if the running process had one.
    pub fn take_health(&mut self) -> Option<OwnedFd> {
        self.health.take()
    }

    /// Tells the running process that this one serves: it stops accepting and drains.
    ///
    /// # Errors
    ///
    /// The running process did not acknowledge (it may already be gone).
    pub fn finish(self) -> Result<(), HandoffError> {
        send(&self.conn, &Message::Drain, &[])?;
        match recv(&self.conn)? {
            Some((Message::Draining, _)) => Ok(()),
            Some((other, _)) => Err(HandoffError::Protocol(format!(
                "expected DRAINING, got {other:?}"
            ))),
            None => Err(HandoffError::Protocol(
                "the running weft hung up before draining".into(),
            )),
        }
    }
}
