//! Outgoing connections on a glommio executor: resolve, connect under a timeout, then serve
//! the socket with the same `Connection` driver and `Transport` as an accepted connection.
//!
//! # How an attempt waits for its connect
//!
//! glommio 0.9's `TcpStream::connect` and `connect_timeout` create their own socket (an
//! io_uring `IORING_OP_CONNECT` on it), so they can neither bind it to a chosen address nor
//! set options before the SYN. An attempt therefore makes its own socket with socket2
//! (non-blocking, close-on-exec), sets its options, binds it if asked, and calls
//! `connect(2)`, which answers `EINPROGRESS`. The descriptor is then adopted by a glommio
//! `TcpStream`, and the attempt writes zero bytes to it: glommio first tries a
//! `send(MSG_DONTWAIT)`, which fails with `EAGAIN` while the handshake is in progress, so it
//! arms an io_uring poll for `POLLOUT` and parks the task. That poll fires when the handshake
//! ends either way (`POLLOUT` when established, `POLLERR`/`POLLHUP` on failure); the retried
//! empty send then returns `Ok(0)` once the connection is established, or hands over the
//! socket's pending error (`ECONNREFUSED`, `ENETUNREACH`, ...). `SO_ERROR` is checked too.
//! No thread blocks and no timer polls. The connect timeout and `stop_connecting` race that
//! wait; the loser's socket is dropped, which cancels glommio's poll and closes the
//! descriptor, so the kernel abandons the handshake.
//!
//! Host names resolve with `getaddrinfo` (both families) on glommio's blocking-thread pool,
//! never on the reactor thread; numeric hosts never reach the resolver. A name's addresses
//! are raced (happy eyeballs, RFC 8305, `proto::eyeballs`): IPv6 first, each attempt a
//! head start (`ConnectOptions::attempt_delay`) ahead of the next, the first connection
//! winning; the losers' sockets are dropped as above.

use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::AsyncWrite;
use glommio::net::TcpStream;
use glommio::timer::Timer;
use socket2::{Domain, Protocol as SockProtocol, SockAddr, SockRef, Socket, Type};

use super::connection::Connection;
use super::shard::ShardCtx;
use super::tls;
use crate::addr::Address;
use crate::proto::client::{
    AfterEnd, ConnectError, ConnectOptions, ConnectorState, ConnectorStateError, Destination, Machine,
};
use crate::proto::close::CloseReason;
use crate::proto::eyeballs::{Next, Race};
use crate::proto::protocol::{Factory, FnFactory};
use crate::proto::reconnect::{Backoff, Jitter};
use crate::proto::tls::{HandshakeResult, TlsSession};
use crate::proto::transport::Transport;
use crate::stats::ShardStats;
use crate::sys;

/// A [`Factory`] that also hears about its outgoing connections: Twisted's `ClientFactory`.
///
/// [`connect_tcp`] takes one and owns it. For each connection attempt the connector calls
/// [`started_connecting`](Self::started_connecting), then exactly one of:
///
/// - [`client_connection_failed`](Self::client_connection_failed), when no connection was
///   made (refused, timed out, unreachable, bind or resolution error, or cancelled by
///   [`Connector::stop_connecting`]);
/// - [`Factory::build_protocol`] with the peer's address, then the protocol's callbacks, then
///   [`client_connection_lost`](Self::client_connection_lost) after the protocol's own
///   `connection_lost`.
///
/// Every callback runs on its own turn of the executor, never inside a call the program made
/// (`connect`, `stop_connecting`, `disconnect`), so a callback may call any
/// [`Connector`] method, e.g. [`connect`](Connector::connect) again to reconnect.
/// [`Factory::start`] runs before the first `started_connecting`, and [`Factory::stop`] once
/// the connector stops trying (it is neither connecting, nor connected, nor waiting to
/// retry).
///
/// Every [`FnFactory`] is a `ClientFactory` that ignores these events:
/// `connect_tcp(dest, factory_fn(|_peer| Some(MyProtocol)), options)`.
pub trait ClientFactory: Factory {
    /// An attempt started: the destination is about to be resolved and connected to.
    fn started_connecting(&mut self, connector: &Connector) {
        let _ = connector;
    }

    /// The attempt failed; no protocol was built.
    fn client_connection_failed(&mut self, connector: &Connector, reason: &ConnectError) {
        let _ = (connector, reason);
    }

    /// The connection this attempt made is gone. Called after the protocol's
    /// `connection_lost`, with the same reason.
    fn client_connection_lost(&mut self, connector: &Connector, reason: &CloseReason) {
        let _ = (connector, reason);
    }

    /// The reconnect policy used up its `max_retries`: the connector is idle and stays so
    /// until [`Connector::connect`]. Called after the last failure's or loss's callback.
    fn client_gave_up(&mut self, connector: &Connector) {
        let _ = connector;
    }
}

impl<B> ClientFactory for FnFactory<B> where Self: Factory {}

/// Longest timer armed (a larger timeout or delay waits "forever"): `Instant + Duration`
/// must not overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Connects to `destination` from the executor this runs on, and keeps the connection's
/// protocol, built by `factory`, served there: Twisted's `reactor.connectTCP`.
///
/// The first attempt starts at once; the returned [`Connector`] follows it (its state, its
/// transport) and can stop it, disconnect, or connect again. Every outcome reaches the
/// factory's [`ClientFactory`] callbacks on a later turn of the executor, never inside this
/// call. The connection uses the same [`Transport`] and driver as an accepted one: write
/// buffering, half-close, abort and flow control behave the same.
///
/// Call it on any glommio executor thread:
///
/// - **inside an engine shard** (from [`Factory::start`], a
///   protocol callback, or a task spawned there): the connection joins the shard's
///   registry, its read buffer and its counters, and drains and aborts with the engine
///   (it gets `drain_requested`, then [`CloseReason::Shutdown`], and is not retried). Like
///   an accepted connection it holds the drain open until it closes: a protocol whose
///   connections sit idle (a pool's) closes them in `drain_requested`. An
///   attempt still in progress when the shard stops is dropped without a callback. The
///   closures given to [`EngineBuilder::listen`](crate::EngineBuilder::listen) and
///   [`on_each_shard`](crate::EngineBuilder::on_each_shard) run on the shard, so they
///   may call it too;
/// - **on a bare glommio `LocalExecutor`**: the first call makes that thread's context, with
///   the default connection settings (shard 0 of 1, drained by no engine).
///
/// # Panics
///
/// Outside a glommio executor (glommio's `spawn_local` panics there).
///
/// # Examples
///
/// An echo round trip from a bare executor:
///
/// ```
/// use std::cell::{Cell, RefCell};
/// use std::rc::Rc;
/// use std::time::Duration;
/// use weft::protocols::Echo;
/// use weft::{
///     Address, ClientFactory, CloseReason, ConnectError, ConnectOptions, Connector, Cores, Engine,
///     EngineConfig, Factory, Protocol, Transport, connect_tcp,
/// };
///
/// /// Sends a line, keeps the answer, closes.
/// struct Hello(Rc<RefCell<Vec<u8>>>);
///
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &Transport) {
///         t.write(b"hello\n");
///     }
///     fn data_received(&mut self, data: &[u8], t: &Transport) {
///         self.0.borrow_mut().extend_from_slice(data);
///         if data.ends_with(b"\n") {
///             t.lose_connection();
///         }
///     }
/// }
///
/// /// Builds `Hello`s and notes when the attempt is over.
/// struct Client {
///     answer: Rc<RefCell<Vec<u8>>>,
///     done: Rc<Cell<bool>>,
/// }
///
/// impl Factory for Client {
///     type Protocol = Hello;
///     fn build_protocol(&mut self, _peer: &Address) -> Option<Hello> {
///         Some(Hello(self.answer.clone()))
///     }
/// }
///
/// impl ClientFactory for Client {
///     fn client_connection_failed(&mut self, _c: &Connector, reason: &ConnectError) {
///         eprintln!("connect failed: {reason}");
///         self.done.set(true);
///     }
///     fn client_connection_lost(&mut self, _c: &Connector, _reason: &CloseReason) {
///         self.done.set(true);
///     }
/// }
///
/// let mut config = EngineConfig::default();
/// config.cores = Cores::Count(1);
/// let server = Engine::builder(config)
///     .listen("127.0.0.1:0".parse::<std::net::SocketAddr>()?, |_shard| Echo::factory())
///     .start()?;
/// let addr = server.local_addrs()[0];
///
/// // A client engine: no listener, one task per shard; it stops when its task is done.
/// let (tx, rx) = std::sync::mpsc::channel();
/// let client = Engine::builder(config_for_one_core())
///     .on_each_shard(move |_shard| {
///         let tx = tx.clone();
///         async move {
///             let (answer, done) = (Rc::default(), Rc::new(Cell::new(false)));
///             let factory = Client { answer: Rc::clone(&answer), done: Rc::clone(&done) };
///             let mut options = ConnectOptions::default();
///             options.timeout = Duration::from_secs(5);
///             let _connector = connect_tcp(addr, factory, options);
///             // The connection runs in its own task; this one just waits for the outcome.
///             while !done.get() {
///                 weft::shard::sleep(Duration::from_millis(1)).await;
///             }
///             let _ = tx.send(answer.take());
///         }
///     })
///     .start()?;
/// client.join()?;
/// let answer = rx.recv()?;
/// # fn config_for_one_core() -> EngineConfig {
/// #     let mut c = EngineConfig::default();
/// #     c.cores = Cores::Count(1);
/// #     c
/// # }
/// assert_eq!(answer, b"hello\n");
/// server.shutdown();
/// server.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect_tcp<F: ClientFactory>(
    destination: impl Into<Destination>,
    factory: F,
    options: ConnectOptions,
) -> Connector {
    let factory = Rc::new(RefCell::new(factory));
    let connector = Connector {
        inner: Rc::new(Inner {
            destination: destination.into(),
            shard: ShardCtx::current(),
            machine: RefCell::new(Machine::new()),
            attempt_waker: RefCell::new(None),
            retry_waker: RefCell::new(None),
            transport: RefCell::new(None),
            backoff: RefCell::new(options.reconnect.clone().map(Backoff::new)),
            jitter: RefCell::new(Jitter::new(entropy_seed())),
            options,
            outcomes: RefCell::default(),
            launch: Box::new(move |c: &Connector, attempt| {
                glommio::spawn_local(run_attempt(c.clone(), factory.clone(), attempt)).detach();
            }),
        }),
    };
    // A new connector is disconnected, so this first connect is always allowed.
    let _ = connector.connect();
    connector
}

/// Resolves a destination to the addresses an attempt tries, in order: the address itself
/// for a numeric host (no lookup), else every IPv4 and IPv6 address of the name, looked up
/// on glommio's blocking-thread pool so that a slow resolver never stalls the executor.
///
/// # Errors
///
/// [`ConnectError::Resolution`] when the name does not resolve.
///
/// # Panics
///
/// Outside a glommio executor, for a host name (glommio's `spawn_local` panics there).
pub async fn resolve(destination: &Destination) -> Result<Vec<Address>, ConnectError> {
    if let Some(addr) = destination.address() {
        return Ok(vec![addr]);
    }
    let host = destination.host().to_owned();
    let (name, port) = (host.clone(), destination.port());
    // A detached task owns the blocking call, so that an attempt that times out or is
    // cancelled simply stops waiting while the lookup finishes in the background.
    let lookup =
        glommio::spawn_local(glommio::executor().spawn_blocking(move || lookup(&name, port))).detach();
    lookup
        .await
        .unwrap_or_else(|| Err(io::Error::other("the lookup was cancelled")))
        .map_err(|e| ConnectError::Resolution {
            host,
            detail: e.to_string(),
        })
}

/// `getaddrinfo` for both families, without duplicates, in the resolver's order.
fn lookup(host: &str, port: u16) -> io::Result<Vec<Address>> {
    let mut out: Vec<Address> = Vec::new();
    for addr in (host, port).to_socket_addrs()? {
        let addr = Address::from(addr);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "the name has no address"));
    }
    Ok(out)
}

/// A handle on outgoing connections to one destination: Twisted's `Connector`.
///
/// Cheap to clone (an `Rc`); used on the executor that made it. Its state moves
/// disconnected → connecting → connected → disconnected; [`connect`](Self::connect) starts
/// again from disconnected. Callbacks of its factory receive it, so that they can connect
/// again or stop. Dropping every handle does not stop it: its connection and its retries
/// hold it, and it goes on by its policy until [`disconnect`](Self::disconnect),
/// [`abort`](Self::abort) or [`stop_trying`](Self::stop_trying) (or the shard's drain). A
/// connection made for one call, which must not outlive the call's future (given up on by a
/// timeout, say), is held by [`abort_on_drop`](Self::abort_on_drop).
#[derive(Clone)]
pub struct Connector {
    inner: Rc<Inner>,
}

/// A [`Connector`] that is [`abort`](Connector::abort)ed when this handle is dropped (see
/// [`Connector::abort_on_drop`]); it derefs to the connector.
#[derive(Debug)]
pub struct AbortOnDrop(Connector);

impl std::ops::Deref for AbortOnDrop {
    type Target = Connector;

    fn deref(&self) -> &Connector {
        &self.0
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts attempt number `u64` of a connector.
type Launch = dyn Fn(&Connector, u64);

struct Inner {
    destination: Destination,
    options: ConnectOptions,
    shard: Rc<ShardCtx>,
    machine: RefCell<Machine>,
    /// Wakes the attempt in progress, so that it sees a `stop_connecting`.
    attempt_waker: RefCell<Option<Waker>>,
    /// Wakes the pending retry, so that it sees a `connect` or `stop_trying`.
    retry_waker: RefCell<Option<Waker>>,
    /// The open connection's transport.
    transport: RefCell<Option<Transport>>,
    backoff: RefCell<Option<Backoff>>,
    jitter: RefCell<Jitter>,
    /// Spawns an attempt with the factory (whose type this erases).
    launch: Box<Launch>,
    /// What async callers of [`Connector::connected`] and [`Connector::closed`] wait for.
    outcomes: RefCell<Outcomes>,
}

/// Counts of the connector's endings, and the latest of each, for its futures (a
/// connection, while open, is `Inner::transport`).
#[derive(Default)]
struct Outcomes {
    failures: u64,
    losses: u64,
    failure: Option<ConnectError>,
    loss: Option<CloseReason>,
    waiters: Vec<Waker>,
}

impl Outcomes {
    fn wake(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", &self.inner.destination)
            .field("state", &self.state())
            .finish()
    }
}

impl Connector {
    /// Starts a new attempt; the factory hears `started_connecting` on a later turn. Also
    /// resumes retrying after [`stop_trying`](Self::stop_trying), and replaces a pending
    /// retry.
    ///
    /// # Errors
    ///
    /// [`ConnectorStateError`] unless the connector is disconnected.
    pub fn connect(&self) -> Result<(), ConnectorStateError> {
        let attempt = {
            let mut machine = self.inner.machine.borrow_mut();
            let attempt = machine.connect()?;
            machine.resume_trying();
            attempt
        };
        wake(&self.inner.retry_waker);
        (self.inner.launch)(self, attempt);
        Ok(())
    }

    /// Cancels the attempt in progress: the factory hears `client_connection_failed` with
    /// [`ConnectError::Cancelled`] on a later turn, and nothing else about this attempt. A
    /// reconnect policy does not retry it.
    ///
    /// # Errors
    ///
    /// [`ConnectorStateError`] unless the connector is connecting.
    pub fn stop_connecting(&self) -> Result<(), ConnectorStateError> {
        self.inner.machine.borrow_mut().stop_connecting()?;
        wake(&self.inner.attempt_waker);
        Ok(())
    }

    /// Ends the reconnect policy's retries: a pending retry is cancelled, an attempt in
    /// progress is stopped, and a later loss is not retried. [`connect`](Self::connect)
    /// resumes them.
    pub fn stop_trying(&self) {
        self.inner.machine.borrow_mut().stop_trying();
        wake(&self.inner.retry_waker);
        // Only an attempt in progress can be stopped; otherwise there is nothing to stop.
        let _ = self.stop_connecting();
    }

    /// Stops trying, then closes: an attempt in progress is cancelled, an open connection
    /// flushes and closes ([`Transport::lose_connection`]).
    pub fn disconnect(&self) {
        self.stop_trying();
        if let Some(t) = self.transport() {
            t.lose_connection();
        }
    }

    /// Stops trying, then resets: an attempt in progress is cancelled, an open connection
    /// drops what it has queued and closes at once ([`Transport::abort_connection`]). For a
    /// call given up on (a timeout), whose connection's state is unknown.
    pub fn abort(&self) {
        self.stop_trying();
        if let Some(t) = self.transport() {
            t.abort_connection();
        }
    }

    /// This connector, [`abort`](Self::abort)ed when the returned handle is dropped: a
    /// connection made for one call goes with the call's future, however that future ends
    /// (finished, dropped by [`shard::timeout`](crate::shard::timeout), or by a drain).
    pub fn abort_on_drop(self) -> AbortOnDrop {
        AbortOnDrop(self)
    }

    /// Where the connector stands.
    pub fn state(&self) -> ConnectorState {
        self.inner.machine.borrow().state()
    }

    /// The destination, as given.
    pub fn destination(&self) -> &Destination {
        &self.inner.destination
    }

    /// True when nothing is open, no attempt runs and no retry is pending: the connector
    /// has stopped (after `disconnect`, `stop_trying`, a loss it does not retry, or a policy
    /// that gave up) until [`connect`](Self::connect).
    pub fn is_idle(&self) -> bool {
        self.inner.transport.borrow().is_none() && self.inner.machine.borrow().is_idle()
    }

    /// The open connection's transport, while connected.
    pub fn transport(&self) -> Option<Transport> {
        self.inner.transport.borrow().clone()
    }

    /// Resolves when the connector is connected (at once if it is), with the connection's
    /// transport; or with the error of the next attempt that fails first. A connection that is
    /// closing (its linger after `lose_connection`, up to `ConnectionConfig::linger`) does
    /// not count: the call waits for the next one. With a reconnect policy a failure is
    /// reported even though a retry follows: call it again to wait for that one. On an idle
    /// connector ([`is_idle`](Self::is_idle): nothing open, no attempt, no retry pending, as
    /// after the policy gave up) it answers at once with the last failure
    /// ([`ConnectError::Cancelled`] if there was none), so a loop that calls it checks
    /// `is_idle` to stop. To wait for the end of the connection it returned, use
    /// [`Transport::closed`].
    ///
    /// During an outage with a reconnect policy, a call made while a retry is pending
    /// ([`state`](Self::state) is disconnected and [`is_idle`](Self::is_idle) is false) waits
    /// for that retry's attempt: the rest of its back-off delay first, which grows up to the
    /// policy's [`max_delay`](crate::ReconnectPolicy::max_delay) (an hour by default), then
    /// the attempt. A caller that must answer sooner checks those two first, or bounds the
    /// wait with [`shard::timeout`](crate::shard::timeout);
    /// [`client::Pipeline`](crate::client::Pipeline) refuses its calls at once then.
    ///
    /// # Errors
    ///
    /// The failed attempt's [`ConnectError`].
    pub async fn connected(&self) -> Result<Transport, ConnectError> {
        let failures = self.inner.outcomes.borrow().failures;
        poll_fn(|cx| {
            if let Some(t) = self.transport().filter(Transport::is_connected) {
                return Poll::Ready(Ok(t));
            }
            let mut o = self.inner.outcomes.borrow_mut();
            if o.failures > failures || self.inner.machine.borrow().is_idle() {
                return Poll::Ready(Err(o.failure.clone().unwrap_or(ConnectError::Cancelled)));
            }
            o.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resolves with the reason when the open connection ends; while none is open, when the
    /// next one to open ends (so a connection that ended and was replaced before the call is
    /// not the one it reports: [`Transport::closed`] follows one connection). `None` once the
    /// connector is idle (nothing open, no attempt, no retry pending) with no loss to report
    /// since the call.
    pub async fn closed(&self) -> Option<CloseReason> {
        let losses = self.inner.outcomes.borrow().losses;
        poll_fn(|cx| {
            let mut o = self.inner.outcomes.borrow_mut();
            if o.losses > losses {
                return Poll::Ready(o.loss.clone());
            }
            if self.inner.machine.borrow().is_idle() {
                return Poll::Ready(None);
            }
            o.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn wake(slot: &RefCell<Option<Waker>>) {
    let waker = slot.borrow_mut().take();
    if let Some(w) = waker {
        w.wake();
    }
}

/// A connected socket and its two ends.
struct Established {
    stream: TcpStream,
    local: Address,
    peer: Address,
    /// The TLS session, its handshake done, and the plaintext that came with its end.
    tls: Option<(TlsSession, Vec<u8>)>,
}

/// One attempt, from `started_connecting` to its failure or its connection's loss.
async fn run_attempt<F: ClientFactory>(c: Connector, factory: Rc<RefCell<F>>, attempt: u64) {
    // glommio's `spawn_local` polls a new task at once, inside the caller; yielding first puts
    // every callback of this attempt on a later turn, outside `connect` (which a factory
    // callback may be running).
    futures_lite::future::yield_now().await;
    let inner = &c.inner;
    let start = inner.machine.borrow_mut().start_factory();
    {
        let mut f = factory.borrow_mut();
        if start {
            f.start(&inner.shard.info);
        }
        f.started_connecting(&c);
    }
    let outcome = match establish(&c, attempt).await {
        Ok(est) if inner.machine.borrow_mut().connected(attempt) => Ok(est),
        Ok(_) => Err(ConnectError::Cancelled),
        Err(e) => Err(e),
    };
    let retryable = match outcome {
        Err(reason) => {
            inner.machine.borrow_mut().ended(attempt);
            {
                let mut o = inner.outcomes.borrow_mut();
                o.failures += 1;
                o.failure = Some(reason.clone());
                o.wake();
            }
            tracing::debug!(destination = %inner.destination, "connect failed: {reason}");
            factory.borrow_mut().client_connection_failed(&c, &reason);
            reason.is_retryable()
        }
        Ok(est) => {
            let reason = serve(&c, &factory, est).await;
            inner.machine.borrow_mut().ended(attempt);
            {
                let mut o = inner.outcomes.borrow_mut();
                o.losses += 1;
                o.loss = Some(reason.clone());
                o.wake();
            }
            factory.borrow_mut().client_connection_lost(&c, &reason);
            reason != CloseReason::Shutdown
        }
    };
    after_end(&c, &factory, retryable && !inner.shard.draining.get());
}

/// Resolves and connects, until the connection is made, the timeout runs out, or the
/// attempt is cancelled.
async fn establish(c: &Connector, attempt: u64) -> Result<Established, ConnectError> {
    let inner = &c.inner;
    let started = Instant::now();
    let mut work = pin!(connect_any(
        &inner.destination,
        &inner.options,
        &inner.shard.stats
    ));
    let mut timer = Timer::new(inner.options.timeout.min(LONGEST_WAIT));
    let result = poll_fn(|cx| {
        if !inner.machine.borrow().is_connecting(attempt) {
            return Poll::Ready(Err(ConnectError::Cancelled));
        }
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(Err(ConnectError::TimedOut {
                after: started.elapsed(),
            }));
        }
        *inner.attempt_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    inner.attempt_waker.borrow_mut().take();
    result
}

/// Races the destination's addresses (happy eyeballs, RFC 8305: IPv6 first, each attempt
/// `options.attempt_delay` ahead of the next, a failure starting the next at once); the first
/// connection wins and the other sockets are dropped, which closes them, and then runs the
/// TLS handshake if the options ask for one. When all fail, the last failure is the
/// attempt's.
async fn connect_any(
    dest: &Destination,
    options: &ConnectOptions,
    stats: &ShardStats,
) -> Result<Established, ConnectError> {
    let mut addrs = resolve(dest).await?;
    if let Some(bind) = options.bind {
        addrs.retain(|a| a.ip().is_ipv4() == bind.ip().is_ipv4());
        if addrs.is_empty() {
            return Err(ConnectError::Bind {
                addr: Some(bind),
                source: Arc::new(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the destination has no address of the bind address's family",
                )),
            });
        }
    }
    let mut race = Race::new(addrs, options.attempt_delay);
    type Attempt<'a> = Pin<Box<dyn Future<Output = Result<Established, ConnectError>> + 'a>>;
    let mut attempts: Vec<(usize, Address, Attempt<'_>)> = Vec::new();
    // The timer for the next attempt's start, and the instant it was set for.
    let mut timer: Option<(Instant, Timer)> = None;
    let est = poll_fn(|cx| {
        loop {
            let now = Instant::now();
            let wait_until = match race.next(now) {
                Next::Start(index, addr) => {
                    attempts.push((index, addr, Box::pin(connect_one(addr, options))));
                    continue;
                }
                Next::Wait(at) => at,
                Next::Failed(e) => return Poll::Ready(Err(e)),
                Next::Empty => {
                    return Poll::Ready(Err(ConnectError::Resolution {
                        host: dest.host().to_owned(),
                        detail: "no address to try".into(),
                    }));
                }
                Next::Done => return Poll::Pending,
            };
            let mut failed_one = false;
            let mut k = 0;
            while k < attempts.len() {
                let (index, addr, attempt) = &mut attempts[k];
                match attempt.as_mut().poll(cx) {
                    Poll::Pending => k += 1,
                    Poll::Ready(Ok(est)) => {
                        race.connected(*index);
                        return Poll::Ready(Ok(est));
                    }
                    // The local side is wrong: every address would fail the same way.
                    Poll::Ready(Err(e @ ConnectError::Bind { .. })) => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(%addr, "connect failed: {e}");
                        race.failed(*index, e);
                        drop(attempts.swap_remove(k));
                        failed_one = true;
                    }
                }
            }
            if failed_one {
                continue;
            }
            let Some(at) = wait_until else {
                return Poll::Pending;
            };
            if timer.as_ref().is_none_or(|(set_for, _)| *set_for != at) {
                timer = Some((at, Timer::new(at.saturating_duration_since(now))));
            }
            let Some((_, t)) = timer.as_mut() else {
                return Poll::Pending;
            };
            if Pin::new(t).poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The head start is over: go round to start the next attempt.
            timer = None;
        }
    })
    .await?;
    secure(est, dest, options, stats).await
}

/// Runs the TLS handshake on a new connection when the options ask for TLS.
async fn secure(
    mut est: Established,
    dest: &Destination,
    options: &ConnectOptions,
    stats: &ShardStats,
) -> Result<Established, ConnectError> {
    let Some(tls) = &options.tls else {
        return Ok(est);
    };
    let failed = |result: HandshakeResult, detail: String| ConnectError::Tls {
        addr: est.peer,
        result,
        detail,
    };
    let mut session = tls
        .session(dest.host())
        .map_err(|e| failed(HandshakeResult::Other, e.to_string()))?;
    // The connect timeout bounds the whole attempt; this one only keeps the wait finite.
    let timeout = options.timeout.min(LONGEST_WAIT);
    match tls::handshake(&mut est.stream, &mut session, Vec::new(), timeout, stats).await {
        Ok(early) => {
            est.tls = Some((session, early));
            Ok(est)
        }
        Err(f) => Err(failed(f.result, f.detail)),
    }
}

/// One socket, one address (see the module docs for how the wait works).
async fn connect_one(addr: Address, options: &ConnectOptions) -> Result<Established, ConnectError> {
    let started = Instant::now();
    let failed = |e: io::Error| ConnectError::from_io(addr, e, started.elapsed());
    let bind_failed = |e: io::Error| ConnectError::Bind {
        addr: options.bind,
        source: Arc::new(e),
    };
    let target = SockAddr::from(addr.socket_addr());
    let sock = Socket::new(
        Domain::for_address(addr.socket_addr()),
        Type::STREAM.nonblocking().cloexec(),
        Some(SockProtocol::TCP),
    )
    .map_err(bind_failed)?;
    sock.set_nodelay(options.nodelay).map_err(failed)?;
    if let Some(bind) = options.bind {
        sock.bind(&SockAddr::from(bind.socket_addr()))
            .map_err(bind_failed)?;
    }
    match sock.connect(&target) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(failed(e)),
    }
    // Our own TCP socket, open and non-blocking; its ownership moves into glommio's stream,
    // which closes it.
    let mut stream: TcpStream = sys::fd::adopt(OwnedFd::from(sock));
    poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &[]))
        .await
        .map_err(failed)?;
    let fd = sys::fd::borrow(&stream);
    let sock = SockRef::from(&fd);
    if let Some(e) = sock.take_error().map_err(failed)? {
        return Err(failed(e));
    }
    let local = sock
        .local_addr()
        .map_err(failed)?
        .as_socket()
        .ok_or_else(|| failed(io::Error::other("the socket has no IP address")))?;
    Ok(Established {
        stream,
        local: local.into(),
        peer: addr,
        tls: None,
    })
}

/// Builds the protocol and serves the connection with the shard's `Connection` driver;
/// returns why it ended.
async fn serve<F: ClientFactory>(c: &Connector, factory: &RefCell<F>, est: Established) -> CloseReason {
    let inner = &c.inner;
    if let Some(b) = inner.backoff.borrow_mut().as_mut() {
        b.reset();
    }
    let Some(protocol) = super::build_protocol(factory, &est.peer) else {
        // As in Twisted: no protocol, so the connection closes cleanly at once.
        return CloseReason::LocalClose;
    };
    let shard = &inner.shard;
    let transport = Transport::new(
        est.stream.as_raw_fd(),
        est.local,
        est.peer,
        shard.config.flow,
        Instant::now,
    );
    if let Some(k) = inner.options.keepalive {
        // As on accepted connections: a socket option that cannot be set is no reason to
        // drop a connection that works.
        let _ = transport.set_keepalive_params(k);
    }
    let key = shard.conns.borrow_mut().insert(transport.clone());
    *inner.transport.borrow_mut() = Some(transport.clone());
    inner.outcomes.borrow_mut().wake();
    let conn = Connection::new(est.stream, protocol, transport, shard.clone(), key);
    let reason = match est.tls {
        Some((session, early)) => conn.with_tls(session).with_input(early).run().await,
        None => conn.run().await,
    };
    inner.transport.borrow_mut().take();
    reason
}

/// After the factory heard how an attempt ended: retry later, stop, or nothing (the factory
/// already connected again).
fn after_end<F: ClientFactory>(c: &Connector, factory: &Rc<RefCell<F>>, retryable: bool) {
    let inner = &c.inner;
    let has_policy = inner.backoff.borrow().is_some();
    let next = inner.machine.borrow().after_end(retryable && has_policy);
    match next {
        AfterEnd::Idle => return,
        AfterEnd::Retry => {
            let normal = inner.jitter.borrow_mut().normal();
            let delay = inner
                .backoff
                .borrow_mut()
                .as_mut()
                .and_then(|b| b.next_delay(normal));
            if let Some(delay) = delay {
                let id = inner.machine.borrow_mut().schedule_retry();
                tracing::debug!(destination = %inner.destination, "reconnecting in {delay:?}");
                glommio::spawn_local(retry_later(c.clone(), factory.clone(), id, delay)).detach();
                return;
            }
            tracing::debug!(destination = %inner.destination, "giving up: no retries left");
            factory.borrow_mut().client_gave_up(c);
        }
        AfterEnd::GiveUp => {}
    }
    stop_factory(c, factory);
}

/// Waits out a retry's delay, then connects, unless `connect` or `stop_trying` came first.
async fn retry_later<F: ClientFactory>(c: Connector, factory: Rc<RefCell<F>>, id: u64, delay: Duration) {
    let inner = &c.inner;
    let mut timer = Timer::new(delay.min(LONGEST_WAIT));
    poll_fn(|cx| {
        if !inner.machine.borrow().retry_pending(id) || Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        *inner.retry_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    let attempt = inner.machine.borrow_mut().retry_now(id);
    match attempt {
        Some(attempt) => (inner.launch)(&c, attempt),
        None => stop_factory(&c, &factory),
    }
}

fn stop_factory<F: ClientFactory>(c: &Connector, factory: &RefCell<F>) {
    // The connector is idle now: its futures answer.
    c.inner.outcomes.borrow_mut().wake();
    let stop = c.inner.machine.borrow_mut().stop_factory();
    if stop {
        factory.borrow_mut().stop();
    }
}

/// A jitter seed that differs between connectors and runs, so that clients that lost the
/// same server do not retry in step.
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(&h as *const _ as usize);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_seeds_differ() {
        assert_ne!(entropy_seed(), entropy_seed());
    }

    #[test]
    fn lookup_asks_for_both_families() {
        // getaddrinfo with AF_UNSPEC: an IPv6 literal comes back as IPv6 (Twisted's resolver
        // would refuse it), an IPv4 one as IPv4.
        let v6 = lookup("::1", 80).unwrap();
        assert_eq!(v6, vec!["[::1]:80".parse::<Address>().unwrap()]);
        let v4 = lookup("127.0.0.1", 81).unwrap();
        assert_eq!(v4, vec!["127.0.0.1:81".parse::<Address>().unwrap()]);
        let local = lookup("localhost", 82).unwrap();
        assert!(
            local.iter().all(|a| a.ip().is_loopback() && a.port() == 82),
            "{local:?}"
        );
    }
}
