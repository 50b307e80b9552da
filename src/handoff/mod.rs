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
//! One successor at a time: one that asks while another is being lent the listeners, or
//! after another took over, is refused with the reason. A successor whose predecessor hangs
//! up before `END` (stopped, killed) holds nothing and says so ([`HandoffError::Vanished`]);
//! one whose predecessor vanishes after `END` serves on the sockets it received.
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
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
pub use wire::Role;
use wire::{MAX_LEN, Message, VERSION};

use crate::config::Layers;
use crate::driver::engine::EngineControl;
use crate::health::HealthCheck;
use crate::sys::fdpass::{self, MAX_FDS};
use crate::sys::poll::{wait_for_accept, wait_readable};
use crate::sys::process::effective_uid;
use crate::sys::socket::{local_ip_addr, peer_uid};

/// How long either side waits for the other's next message during the exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the running process waits for a successor to start serving and say `DRAIN`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a successor that is refused has to ask (it asks as soon as it connects).
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Why a successor that asks while another one is being lent the listeners is refused.
const IN_PROGRESS: &str = "another takeover is in progress; once that successor serves, take over from it";
/// Why a successor that asked while another one took over is refused.
const TAKEN_OVER: &str = "another successor took over first and serves now; this weft is \
                          draining: take over from the one that serves";

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
    /// The running process hung up before it had passed every listener: it was stopped or
    /// killed during the handoff, or it handed off to another successor first.
    #[error(
        "the running weft at {} went away during the handoff (it was stopped or killed, or \
         another successor took over first): nothing was taken over and this one does not \
         serve; check whether a weft still serves (if none does, start this one without \
         --takeover; if one does, take over again)",
        path.display()
    )]
    Vanished {
        /// The socket's path.
        path: PathBuf,
    },
    /// The running process did not answer in time.
    #[error(
        "the running weft at {} did not answer within {timeout:?}: it is hung, or busy with \
         another takeover; nothing was taken over, try again",
        path.display()
    )]
    NoAnswer {
        /// The socket's path.
        path: PathBuf,
        /// How long this process waited.
        timeout: Duration,
    },
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
            refuse(&conn, "the successor runs as another user");
            continue;
        }
        match lend(&conn, listener, engine, health) {
            Ok(true) => {
                tracing::info!("handed the listeners over; draining");
                refuse_queued(listener, TAKEN_OVER);
                return;
            }
            Ok(false) => tracing::warn!("a successor took the listeners but gave up before serving"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

/// Refuses, with `why`, every successor queued on `listener`, without waiting for more.
fn refuse_queued(listener: &Socket, why: &str) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((conn, _)) = listener.accept() {
        tracing::warn!("handoff refused: {why}");
        refuse(&conn, why);
    }
    let _ = listener.set_nonblocking(false);
}

/// Answers a successor's question with `why` it is refused. The question is read first: a
/// socket closed with it unread would reset the connection, and the successor would see the
/// reset instead of the answer.
fn refuse(conn: &Socket, why: &str) {
    let _ = conn.set_read_timeout(Some(REFUSAL_READ_TIMEOUT));
    let _ = recv(conn);
    let _ = send(conn, &Message::Refused(why.to_owned()), &[]);
}

/// True if the peer runs as this process's user, or as root.
fn same_user(conn: &Socket) -> bool {
    peer_uid(conn.as_fd()).is_ok_and(|uid| uid == effective_uid() || uid == 0)
}

/// One conversation with a successor; `Ok(true)` once it serves and this engine hands off.
/// Other successors that ask on `listener` meanwhile are refused.
fn lend(
    conn: &Socket,
    listener: &Socket,
    engine: &EngineControl,
    health: Option<&HealthCheck>,
) -> Result<bool, HandoffError> {
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
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_readable([conn.as_fd(), listener.as_fd()], Some(left))? {
            [true, _] => break,
            [false, true] => refuse_queued(listener, IN_PROGRESS),
            [false, false] => {
                return Err(HandoffError::Protocol(format!(
                    "the successor took the listeners but did not say it serves within \
                     {START_TIMEOUT:?}"
                )));
            }
        }
    }
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
    /// How many shards the running process runs (listening sockets per address).
    shards: Option<usize>,
    health: Option<OwnedFd>,
}

impl Takeover {
    /// Asks the weft serving handoffs at `path` for its listening sockets. It keeps serving
    /// on them until [`finish`](Self::finish); dropping the `Takeover` instead cancels.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Connect`] if nothing serves handoffs there; [`HandoffError::Vanished`]
    /// if the running process hangs up before it has passed every listener (stopped, killed, or
    /// handed off to another successor), [`HandoffError::NoAnswer`] if it does not answer; the
    /// other variants if the conversation fails otherwise or the running process refuses.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, HandoffError> {
        let path = path.as_ref();
        let connect_err = |source| HandoffError::Connect {
            path: path.to_owned(),
            source,
        };
        let conn = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).map_err(connect_err)?;
        conn.connect(&SockAddr::unix(path).map_err(connect_err)?)
            .map_err(connect_err)?;
        Self::receive(conn).map_err(|e| match e {
            HandoffError::Io(e) => match e.kind() {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::UnexpectedEof => HandoffError::Vanished {
                    path: path.to_owned(),
                },
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandoffError::NoAnswer {
                    path: path.to_owned(),
                    timeout: EXCHANGE_TIMEOUT,
                },
                _ => HandoffError::Io(e),
            },
            other => other,
        })
    }

    /// The conversation on a connected socket, up to `END`. The running process hanging up
    /// is an [`io::ErrorKind::UnexpectedEof`] error.
    fn receive(conn: Socket) -> Result<Self, HandoffError> {
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
                None => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            }
        }
        // Each shard has its own socket for each address.
        let shards = (!taken.is_empty()).then(|| listeners.len().div_ceil(taken.len()));
        Ok(Self {
            conn,
            listeners,
            roles: taken,
            shards,
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

    /// How many shards the running process runs (each has a socket for every address), if it
    /// passed any listener.
    pub fn shards(&self) -> Option<usize> {
        self.shards
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
