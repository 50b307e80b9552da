//! The Transport: a protocol's handle on its connection (Twisted's `ITransport`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::addr::Address;
use crate::proto::close::CloseReason;
use crate::proto::codec::Encoder;
use crate::proto::outbuf::OutBuf;
use crate::proto::producer::{Call, Producer, ProducerSlot};
use crate::sys::fd::borrow_raw;

/// A connection's handle for writing, closing and socket options.
///
/// Cheap to clone (an `Rc`), usable inside protocol callbacks and from other tasks on the
/// same shard (timers, spawned work), never from another thread. Nothing is sent inline: a
/// write queues bytes and the connection's driver sends everything queued during one
/// callback together. Every method is safe to call after the connection is gone: writes are
/// then dropped and socket options report [`io::ErrorKind::NotConnected`].
#[derive(Clone)]
pub struct Transport {
    inner: Rc<Inner>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    /// `lose_connection` was called: flush, then close.
    closing: bool,
    /// `lose_write_connection` was called: flush, then shutdown(SHUT_WR).
    write_closing: bool,
    /// Reading is paused by the protocol.
    paused: bool,
    /// Output passed the high-water mark and the producer is paused.
    flow_paused: bool,
    /// The socket is closed.
    disconnected: bool,
    /// The driver is inside its poll, so it will see any change without a wake-up.
    polling: bool,
    /// The driver saw an [`IdleHold`] since it last counted idleness: it counts from the
    /// moment it sees none again (and the last one dropped wakes it to do so).
    idle_hold_seen: bool,
    /// `follow_drain` was called: the shard's drain reaches this connection last.
    follows_drain: bool,
}

struct Inner {
    out: RefCell<OutBuf>,
    /// Bytes held below the transport and not yet sent (a TLS layer's ciphertext).
    held: Cell<usize>,
    flags: Cell<Flags>,
    /// A close forced on the connection (abort, engine shutdown): the reason it will end with.
    forced: RefCell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
    /// The producer paused and resumed by this transport's output watermarks; none means
    /// this connection's own reading.
    producer: RefCell<ProducerSlot>,
    flow: FlowConfig,
    /// The protocol's deadline.
    deadline: Cell<Option<Instant>>,
    /// The [`IdleHold`]s alive.
    idle_holds: Cell<u32>,
    /// The time [`Transport::set_deadline`] counts from.
    clock: Clock,
    /// The socket while it is open; -1 after.
    fd: Cell<RawFd>,
    local: Address,
    peer: Address,
    /// The socket's actual peer (differs from `peer` behind a PROXY-protocol balancer).
    real_peer: Address,
    /// The ALPN protocol a TLS handshake agreed on.
    alpn: RefCell<Option<Box<[u8]>>>,
    /// The tasks waiting in [`Transport::closed`] or [`Transport::writable`], then why the
    /// connection ended.
    end: RefCell<End>,
}

/// Holds off a connection's idle timeout while it lives: see [`Transport::hold_idle`].
#[must_use = "the idle timeout is held off only while the guard lives"]
#[derive(Debug)]
pub struct IdleHold {
    transport: Transport,
}

impl Drop for IdleHold {
    fn drop(&mut self) {
        let holds = &self.transport.inner.idle_holds;
        holds.set(holds.get().saturating_sub(1));
        // A driver that saw the hold armed no idle timer: it must look again.
        if holds.get() == 0 && self.transport.inner.flags.get().idle_hold_seen {
            self.transport.wake();
        }
    }
}

/// A connection's end, as [`Transport::closed`] waits for it.
enum End {
    /// Open: the tasks to wake when it ends (or, for [`Transport::writable`], when its
    /// output drains).
    Awaited(Vec<Waker>),
    /// Ended, for this reason.
    Ended(CloseReason),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .field("flags", &self.inner.flags.get())
            .field("buffered", &self.buffered())
            .finish()
    }
}

/// Where a transport reads the time: the driver gives it the OS clock (`Instant::now`), so
/// that this I/O-free core never reads a clock of its own accord.
pub(crate) type Clock = fn() -> Instant;

impl Transport {
    pub(crate) fn new(fd: RawFd, local: Address, peer: Address, flow: FlowConfig, clock: Clock) -> Self {
        Self::proxied(fd, local, peer, peer, flow, clock)
    }

    /// A transport whose protocol sees `peer`, the client a PROXY header named, while the
    /// socket's actual peer is `real_peer`.
    pub(crate) fn proxied(
        fd: RawFd,
        local: Address,
        peer: Address,
        real_peer: Address,
        flow: FlowConfig,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Rc::new(Inner {
                out: RefCell::new(OutBuf::default()),
                held: Cell::new(0),
                flags: Cell::new(Flags::default()),
                forced: RefCell::new(None),
                waker: RefCell::new(None),
                producer: RefCell::new(ProducerSlot::default()),
                flow,
                deadline: Cell::new(None),
                idle_holds: Cell::new(0),
                clock,
                fd: Cell::new(fd),
                local,
                peer,
                real_peer,
                alpn: RefCell::new(None),
                end: RefCell::new(End::Awaited(Vec::new())),
            }),
        }
    }

    /// A transport with no socket, for testing protocols without I/O.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        let addr = Address::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        Self::new(-1, addr, addr, FlowConfig::default(), Instant::now)
    }

    /// Arms the protocol's deadline at `at`, for tests that keep a clock of their own.
    #[cfg(test)]
    pub(crate) fn set_deadline_at(&self, at: Instant) {
        self.inner.deadline.set(Some(at));
    }

    /// Queues `data` for the peer. Dropped if the connection is closing for good (aborted,
    /// write side shut, or gone). Writes made after `lose_connection` are still sent.
    ///
    /// Queued output above the high-water mark pauses the producer (by default this
    /// connection's reading); above the hard cap (`FlowConfig::max_output`, 4 MiB by
    /// default) the connection is closed with [`CloseReason::OutputLimit`]. A protocol that
    /// streams more than that registers a [`Producer`] and writes as it is resumed.
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() || !self.takes_writes() {
            return;
        }
        self.inner.out.borrow_mut().push(data);
        self.after_write();
    }

    /// Queues the bytes `fill` appends to this connection's output, which holds what is
    /// queued already (`fill` only appends): a protocol that builds an answer piece by piece
    /// writes it in place, with no buffer of its own and no copy. As [`write`](Self::write)
    /// otherwise: on a connection closing for good `fill` still runs, and its bytes are dropped.
    /// `fill` must not call this transport (its output is borrowed while `fill` runs).
    pub fn write_with<R>(&self, fill: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if !self.takes_writes() {
            return fill(&mut Vec::new());
        }
        let (result, grew) = {
            let mut out = self.inner.out.borrow_mut();
            let before = out.len();
            let result = out.append_with(fill);
            (result, out.len() > before)
        };
        if grew {
            self.after_write();
        }
        result
    }

    /// Queues `frame` as `encoder` writes it, encoded in place as by
    /// [`write_with`](Self::write_with).
    ///
    /// # Errors
    ///
    /// The encoder refused the frame; nothing of it is queued.
    pub fn write_frame<I, E: Encoder<I>>(&self, encoder: &mut E, frame: I) -> Result<(), E::Error> {
        self.write_with(|out| {
            let len = out.len();
            let result = encoder.encode(frame, out);
            if result.is_err() {
                out.truncate(len);
            }
            result
        })
    }

    /// Queues several buffers, in order, as one write.
    pub fn write_vectored(&self, bufs: &[&[u8]]) {
        if !self.takes_writes() {
            return;
        }
        {
            let mut out = self.inner.out.borrow_mut();
            for b in bufs {
                out.push(b);
            }
        }
        self.after_write();
    }

    /// Applies the output limits after bytes were queued, then wakes the driver.
    fn after_write(&self) {
        let queued = self.inner.out.borrow().len();
        if queued > self.inner.flow.max_output {
            self.close_for_output();
            return;
        }
        if queued > self.inner.flow.high_water && !self.inner.flags.get().flow_paused {
            let mut f = self.inner.flags.get();
            f.flow_paused = true;
            self.inner.flags.set(f);
            self.sync_producer();
        }
        self.wake();
    }

    /// Brings the registered producer in line with the output: paused above the high-water
    /// mark, resumed at the low-water mark, stopped once the connection is gone. It is called
    /// with no borrow held (it may write to this transport, or unregister itself); a change
    /// its own call causes (a write crossing the high-water mark inside `resume_producing`)
    /// reaches it when that call returns, and a few rounds settle a producer that keeps
    /// flipping it.
    fn sync_producer(&self) {
        const ROUNDS: usize = 8;
        for _ in 0..ROUNDS {
            let f = self.inner.flags.get();
            let owed = self
                .inner
                .producer
                .borrow_mut()
                .take_owed(f.flow_paused, f.disconnected);
            let Some((mut producer, call)) = owed else {
                return;
            };
            call.on(&mut *producer);
            if call == Call::Stop {
                continue;
            }
            let replaced = self.inner.producer.borrow_mut().put_back(producer);
            if let Some(mut old) = replaced {
                old.stop_producing();
            }
        }
    }

    /// Registers the producer that this transport's output watermarks pause and resume,
    /// replacing this connection's own reading as the thing paused (Twisted's
    /// `registerProducer` with a push producer). If the output is already above the
    /// high-water mark it is paused at once; on a closed transport it is stopped. A producer
    /// registered before is replaced, and stopped (Twisted refuses a second one instead).
    ///
    /// # When the producer runs
    ///
    /// Synchronously, on this shard, from inside other calls: `pause_producing` from inside the
    /// [`write`](Self::write) (or [`register_producer`](Self::register_producer)) that crosses
    /// the high-water mark, so within the writer's own callback; `resume_producing` from the
    /// driver after a flush brings the output down to the low-water mark; `stop_producing` when
    /// this connection closes. The transport holds no borrow while it calls the producer, so a
    /// producer may write to this very transport, or unregister itself, from its callbacks,
    /// but it must not expect the write that paused it to have returned.
    ///
    /// A producer that writes from inside its own `resume_producing` is not paused in the
    /// middle of that call (it is borrowed by it): its pause comes when the call returns. A
    /// producer that writes in a loop there checks [`is_output_full`](Self::is_output_full)
    /// and returns when it turns true.
    pub fn register_producer(&self, producer: Box<dyn Producer>) {
        let replaced = self.inner.producer.borrow_mut().register(producer);
        if let Some(mut old) = replaced {
            old.stop_producing();
        }
        self.sync_producer();
        self.wake();
    }

    /// Removes the registered producer (it gets no call); the watermarks pause this
    /// connection's reading again. A producer that unregisters itself from inside its own
    /// callback is dropped when that returns, and `None` is returned.
    pub fn unregister_producer(&self) -> Option<Box<dyn Producer>> {
        let p = self.inner.producer.borrow_mut().unregister();
        self.wake();
        p
    }

    /// True while the queued output is above the high-water mark, until a flush brings it
    /// down to the low-water mark: the registered producer is paused (or will be, when its
    /// callback running now returns), or, with none, this connection's reading.
    #[inline]
    pub fn is_output_full(&self) -> bool {
        self.inner.flags.get().flow_paused
    }

    /// Arms (or re-arms) the protocol's deadline: if it is not cleared within `after`, the
    /// protocol's [`deadline_expired`](crate::Protocol::deadline_expired) runs and the
    /// connection closes with [`CloseReason::DeadlineExpired`].
    pub fn set_deadline(&self, after: Duration) {
        self.inner.deadline.set(Some((self.inner.clock)() + after));
        self.wake();
    }

    /// Clears the protocol's deadline.
    pub fn clear_deadline(&self) {
        self.inner.deadline.set(None);
    }

    /// True while the protocol's deadline is armed.
    pub fn has_deadline(&self) -> bool {
        self.inner.deadline.get().is_some()
    }

    /// Holds off the idle timeout
    /// ([`ConnectionConfig::idle_timeout`](crate::ConnectionConfig::idle_timeout)) while the
    /// returned guard lives: a connection whose answer is being made (a long poll, a slow
    /// backend, a call to another shard) is not idle, though no byte moves. Its idle time
    /// counts again from the moment the last guard is dropped. The write-stall timeout and
    /// the protocol's deadline are not affected. [`Answered`](crate::codec::Answered) holds
    /// one while it makes answers, so the idle timeout only closes a connection between
    /// requests (nginx's `keepalive_timeout`); an answer it does not make (a request answered
    /// later by hand, after [`Answer::Nothing`](crate::codec::Answer::Nothing)) holds one of
    /// its own for as long as it waits.
    pub fn hold_idle(&self) -> IdleHold {
        let holds = &self.inner.idle_holds;
        holds.set(holds.get().saturating_add(1));
        IdleHold {
            transport: self.clone(),
        }
    }

    /// True while an [`IdleHold`] lives, or when the last one was dropped since the driver
    /// last asked: either way idleness counts from now. Driver side.
    pub(crate) fn idle_held_since_asked(&self) -> bool {
        let mut f = self.inner.flags.get();
        let held = self.has_idle_hold();
        let seen = f.idle_hold_seen;
        if held != seen {
            f.idle_hold_seen = held;
            self.inner.flags.set(f);
        }
        held || seen
    }

    /// True while an [`IdleHold`] lives.
    pub(crate) fn has_idle_hold(&self) -> bool {
        self.inner.idle_holds.get() > 0
    }

    /// Flushes everything queued, then closes the connection. The protocol's
    /// `connection_lost` follows with [`CloseReason::LocalClose`] (or
    /// [`CloseReason::PeerEof`] when the peer had already closed its side).
    ///
    /// A registered producer keeps running meanwhile: it is resumed at the low-water mark as
    /// usual, and what it writes is sent before the close, which comes once a flush leaves
    /// nothing queued. So a file streamed by a producer arrives whole even when
    /// `lose_connection` was called first (in Twisted an unpaused producer does not delay
    /// the close); unregister the producer first for the close to come sooner.
    pub fn lose_connection(&self) {
        self.update(|f| {
            f.closing = true;
        });
    }

    /// Flushes everything queued, then shuts down the write side (the peer sees EOF) while
    /// reading goes on. Later writes are dropped.
    pub fn lose_write_connection(&self) {
        self.update(|f| {
            f.write_closing = true;
        });
    }

    /// Drops everything queued and closes at once with a reset (SO_LINGER 0). Idempotent.
    /// `connection_lost` follows with [`CloseReason::Aborted`], after the current callback.
    pub fn abort_connection(&self) {
        self.force_close(CloseReason::Aborted);
    }

    /// Stops reading from the socket: data stays in the kernel, and the peer's sending slows
    /// down as its window fills. As in Twisted, a connection that does not read does not
    /// learn of its peer's EOF or reset until it reads again (a relay leg paused by the other
    /// leg's full output learns it when that output drains, or when the other leg's write
    /// stall timeout closes it); the idle and write-stall timeouts bound how long it waits.
    pub fn pause_reading(&self) {
        self.update(|f| f.paused = true);
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        self.update(|f| f.paused = false);
    }

    /// True while reading is paused.
    pub fn is_reading_paused(&self) -> bool {
        self.inner.flags.get().paused
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> Address {
        self.inner.local
    }

    /// The peer's address: on a PROXY-protocol listener, the client the balancer named.
    pub fn peer_addr(&self) -> Address {
        self.inner.peer
    }

    /// The address of the socket's actual peer: the balancer on a PROXY-protocol listener
    /// whose header named a client, otherwise the same as [`peer_addr`](Self::peer_addr).
    pub fn real_peer_addr(&self) -> Address {
        self.inner.real_peer
    }

    /// The application protocol agreed on by the TLS handshake's ALPN (`h2`, `http/1.1`);
    /// `None` on a plain connection or when none was agreed.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.inner.alpn.borrow().as_ref().map(|p| p.to_vec())
    }

    /// Records the protocol a TLS handshake's ALPN agreed on.
    pub(crate) fn set_alpn(&self, protocol: Option<&[u8]>) {
        *self.inner.alpn.borrow_mut() = protocol.map(Box::from);
    }

    /// Bytes queued and not yet accepted by the kernel (on a TLS connection: plaintext
    /// queued, plus ciphertext made and not yet sent).
    pub fn buffered(&self) -> usize {
        self.inner.out.borrow().len() + self.inner.held.get()
    }

    /// Records the bytes a layer below the transport (TLS) holds for the socket.
    pub(crate) fn set_held(&self, n: usize) {
        self.inner.held.set(n);
    }

    /// Queued output above which the output is full ([`FlowConfig::high_water`]): a
    /// protocol that starts work whose answers it holds (to put them in order, say) may stop
    /// starting more past it, as the transport stops reading.
    pub fn high_water(&self) -> usize {
        self.inner.flow.high_water
    }

    /// The cap on queued output above which the connection is closed
    /// ([`FlowConfig::max_output`]): a protocol that holds answers back (to put them in order,
    /// say) counts them against it too, and closes with
    /// [`close_for_output`](Self::close_for_output) when they pass it.
    pub fn max_output(&self) -> usize {
        self.inner.flow.max_output
    }

    /// Closes the connection as its output passing [`max_output`](Self::max_output) would:
    /// everything queued is dropped, the peer gets a reset, and `connection_lost` follows
    /// with [`CloseReason::OutputLimit`] (counted, and logged at INFO, as such). For a
    /// protocol that holds answers back and finds them, with [`buffered`](Self::buffered),
    /// over the cap.
    pub fn close_for_output(&self) {
        self.force_close(CloseReason::OutputLimit);
    }

    /// True until the connection starts closing (by either side) or is gone. After
    /// [`lose_connection`](Self::lose_connection) it is false while the output still
    /// flushes, and writes made then are still sent, as in Twisted.
    pub fn is_connected(&self) -> bool {
        let f = self.inner.flags.get();
        !f.disconnected && !f.closing && self.inner.forced.borrow().is_none()
    }

    /// Makes this connection follow the engine's drain: for a connection that other
    /// connections write to, on any shard (a subscriber, a chat member), so that at a
    /// shutdown it closes only after they have written their last.
    ///
    /// At a shutdown or handoff every other connection gets
    /// [`Protocol::drain_requested`](crate::Protocol::drain_requested) at once; a follower
    /// gets it once no shard of the engine has work other than followers left: connections
    /// that do not follow and are not closing, PROXY or TLS handshakes, tasks and
    /// cross-shard calls in flight. The task of a follower's own
    /// [`Answered`](crate::codec::Answered) does not count; a task its protocol spawns (to
    /// publish, say) does, as does a call it makes. Until then the follower serves as
    /// before: reading goes on, and what the others write is sent. Then it is told like any
    /// connection (a protocol that closes idle connections there, as `Answered` does, needs
    /// no change), and the drain waits for it to close. Work that starts once every shard
    /// was done (a task spawned by a follower after that) does not hold followers back.
    ///
    /// The drain timeout bounds it all: while some shard's leaders are not done, followers
    /// are told when a quarter of the timeout is left, to flush and close before the rest is
    /// aborted. A follower that only receives reads nothing: with an idle timeout configured,
    /// keep a [`hold_idle`](Self::hold_idle) guard for as long as it subscribes, or it is
    /// closed as idle. Call it before the drain begins (when the connection subscribes, say): called
    /// once the shard drains, it may come too late to hold `drain_requested` back; outside an
    /// engine no drain comes. Until every shard is done, a draining shard looks through its
    /// connections and tasks every 5 ms (to the first leader it finds); connections cost
    /// nothing for this while the engine serves.
    pub fn follow_drain(&self) {
        let mut f = self.inner.flags.get();
        f.follows_drain = true;
        self.inner.flags.set(f);
    }

    /// True once [`follow_drain`](Self::follow_drain) was called.
    #[inline]
    pub fn follows_drain(&self) -> bool {
        self.inner.flags.get().follows_drain
    }

    /// Resolves when this connection has ended (at once if it has), with the reason its
    /// protocol's `connection_lost` got. For async code that holds a transport: unlike
    /// [`Connector::closed`](crate::Connector::closed), which follows whichever connection the
    /// connector has, this is about this one connection only.
    pub async fn closed(&self) -> CloseReason {
        std::future::poll_fn(|cx| match &mut *self.inner.end.borrow_mut() {
            End::Ended(reason) => std::task::Poll::Ready(reason.clone()),
            End::Awaited(waiters) => {
                await_wake(waiters, cx.waker());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Resolves once this connection takes more output: at once unless
    /// [`is_output_full`](Self::is_output_full), else when a flush brings the queued output
    /// down to the low-water mark, or when the connection ends (later writes are then
    /// dropped). For a task that writes to a peer which may read slowly: awaiting this
    /// between writes keeps the output bounded instead of resetting the connection at
    /// [`max_output`](Self::max_output).
    pub async fn writable(&self) {
        std::future::poll_fn(|cx| {
            if !self.is_output_full() || !self.takes_writes() {
                return std::task::Poll::Ready(());
            }
            match &mut *self.inner.end.borrow_mut() {
                End::Ended(_) => std::task::Poll::Ready(()),
                End::Awaited(waiters) => {
                    await_wake(waiters, cx.waker());
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// Sets TCP_NODELAY (on by default).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] once the connection is gone, or the OS error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.with_socket(|s| s.set_nodelay(on))
    }

    /// Reads TCP_NODELAY.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.with_socket(|s| s.nodelay())
    }

    /// Turns TCP keepalive on with the given idle time before the first probe, or off.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        self.with_socket(|s| match idle {
            Some(idle) => s.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle)),
            None => s.set_keepalive(false),
        })
    }

    /// Sets every keepalive knob: idle time, probe interval and probe count.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn set_keepalive_params(&self, k: Keepalive) -> io::Result<()> {
        self.with_socket(|s| {
            let params = socket2::TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval)
                .with_retries(k.count);
            s.set_tcp_keepalive(&params)
        })
    }

    /// Sets TCP_USER_TIMEOUT (how long sent data may stay unacknowledged), or clears it.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn set_user_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.with_socket(|s| s.set_tcp_user_timeout(timeout))
    }

    /// Reads TCP_USER_TIMEOUT.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn user_timeout(&self) -> io::Result<Option<Duration>> {
        self.with_socket(|s| s.tcp_user_timeout())
    }

    /// Reads SO_KEEPALIVE.
    ///
    /// # Errors
    ///
    /// As [`set_nodelay`](Self::set_nodelay).
    pub fn keepalive(&self) -> io::Result<bool> {
        self.with_socket(|s| s.keepalive())
    }

    fn with_socket<T>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<T>) -> io::Result<T> {
        let fd = self.inner.fd.get();
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is closed",
            ));
        }
        // `fd` is the connection's open socket: the driver sets it to -1 before it closes the
        // socket, both run on this one thread, and `f` cannot reach the driver.
        let fd = borrow_raw(self, fd);
        f(socket2::SockRef::from(&fd))
    }

    /// True while writes are queued, not dropped.
    #[inline]
    fn takes_writes(&self) -> bool {
        let f = self.inner.flags.get();
        !f.disconnected && !f.write_closing && self.inner.forced.borrow().is_none()
    }

    fn update(&self, change: impl FnOnce(&mut Flags)) {
        let mut f = self.inner.flags.get();
        change(&mut f);
        self.inner.flags.set(f);
        self.wake();
    }

    /// Wakes the connection's driver, unless it is polling now and will see the change.
    pub(crate) fn wake(&self) {
        if self.inner.flags.get().polling {
            return;
        }
        if let Some(w) = self.inner.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    // ---- driver side ----

    /// Forces the connection closed with `reason` (the first reason wins).
    pub(crate) fn force_close(&self, reason: CloseReason) {
        if self.inner.flags.get().disconnected {
            return;
        }
        {
            let mut forced = self.inner.forced.borrow_mut();
            if forced.is_some() {
                return;
            }
            *forced = Some(reason);
        }
        self.inner.out.borrow_mut().clear();
        self.wake();
    }

    pub(crate) fn forced(&self) -> Option<CloseReason> {
        self.inner.forced.borrow().clone()
    }

    /// True when the driver may read: not paused by the protocol, nor by output flow control
    /// while no other producer is registered.
    pub(crate) fn may_read(&self) -> bool {
        !self.inner.flags.get().paused && !self.flow_stopped()
    }

    /// True while output flow control stops this connection's reading: the output is full
    /// and no other producer is registered to pause instead.
    #[inline]
    pub(crate) fn flow_stopped(&self) -> bool {
        self.inner.flags.get().flow_paused && !self.inner.producer.borrow().is_registered()
    }

    /// After a flush: resumes the producer once output is down to the low-water mark.
    /// Returns true when it resumed: the producer may have queued more output since.
    pub(crate) fn output_drained(&self) -> bool {
        let f = self.inner.flags.get();
        if f.flow_paused && self.inner.out.borrow().len() <= self.inner.flow.low_water {
            let mut f = f;
            f.flow_paused = false;
            self.inner.flags.set(f);
            self.sync_producer();
            self.wake_writers();
            return true;
        }
        false
    }

    /// The protocol's deadline, if armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.inner.deadline.get()
    }

    pub(crate) fn closing(&self) -> bool {
        self.inner.flags.get().closing
    }

    pub(crate) fn write_closing(&self) -> bool {
        self.inner.flags.get().write_closing
    }

    pub(crate) fn out(&self) -> std::cell::RefMut<'_, OutBuf> {
        self.inner.out.borrow_mut()
    }

    /// Marks the start or end of a driver poll, storing the waker at the start.
    pub(crate) fn set_polling(&self, polling: bool, waker: Option<&Waker>) {
        if let Some(w) = waker {
            let mut slot = self.inner.waker.borrow_mut();
            if !slot.as_ref().is_some_and(|old| old.will_wake(w)) {
                *slot = Some(w.clone());
            }
        }
        let mut f = self.inner.flags.get();
        f.polling = polling;
        self.inner.flags.set(f);
    }

    /// The connection has ended, for `reason`: tells the tasks waiting in
    /// [`closed`](Self::closed).
    pub(crate) fn mark_lost(&self, reason: &CloseReason) {
        let end = self.inner.end.replace(End::Ended(reason.clone()));
        if let End::Awaited(waiters) = end {
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    /// Wakes the tasks waiting in [`writable`](Self::writable). They share one list with
    /// those in [`closed`](Self::closed) (a connection's memory is kept small), which look
    /// again and wait on.
    fn wake_writers(&self) {
        let waiters = match &mut *self.inner.end.borrow_mut() {
            End::Awaited(waiters) => std::mem::take(waiters),
            End::Ended(_) => return,
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The socket is closed: drop queued bytes and the waker, and forget the descriptor.
    pub(crate) fn mark_disconnected(&self) {
        let mut f = self.inner.flags.get();
        f.disconnected = true;
        f.polling = false;
        self.inner.flags.set(f);
        self.inner.fd.set(-1);
        self.inner.out.borrow_mut().clear();
        self.inner.held.set(0);
        self.inner.waker.borrow_mut().take();
        self.inner.deadline.set(None);
        self.sync_producer();
    }
}

/// A transport is the producer of another's output (a relay's two sides): pausing it pauses
/// its reading (the same switch as [`Transport::pause_reading`], so a resume by the consumer
/// also undoes a pause of its own protocol's), and stopping it closes it
/// ([`Transport::lose_connection`]).
impl Producer for Transport {
    fn pause_producing(&mut self) {
        self.pause_reading();
    }

    fn resume_producing(&mut self) {
        self.resume_reading();
    }

    fn stop_producing(&mut self) {
        self.lose_connection();
    }
}

/// Options applied to every connection a shard serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// TCP_NODELAY on every connection. Default: on.
    pub nodelay: bool,
    /// Bytes per read, and the size of the one read buffer each shard shares among its
    /// connections. Default: 64 KiB (Twisted's `bufferSize`).
    pub read_size: usize,
    /// Reads one connection may do per wake-up before yielding to others. Default: 16.
    pub reads_per_wakeup: usize,
    /// How long an orderly close waits for the peer's EOF after our FIN (a lingering close,
    /// so that the peer reads our last bytes instead of a reset). Default: 2 s.
    pub linger: Duration,
    /// Output watermarks and cap.
    pub flow: FlowConfig,
    /// Close a connection with nothing read or written for this long, unless an answer is
    /// being made for it ([`Transport::hold_idle`]; `Answered` holds it while it answers).
    /// Default: none.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose queued output made no progress for this long. Default: 30 s.
    pub write_stall_timeout: Option<Duration>,
    /// TCP keepalive probes. Default: off.
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the kernel drops
    /// the connection. Default: the kernel's (off).
    pub user_timeout: Option<Duration>,
    /// SO_SNDBUF for each connection. Default: the kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF for each connection. Default: the kernel's autotuning.
    pub recv_buffer: Option<usize>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            read_size: 64 * 1024,
            reads_per_wakeup: 16,
            linger: Duration::from_secs(2),
            flow: FlowConfig::default(),
            idle_timeout: None,
            write_stall_timeout: Some(Duration::from_secs(30)),
            keepalive: None,
            user_timeout: None,
            send_buffer: None,
            recv_buffer: None,
        }
    }
}

/// Output flow control: where a connection's producer is paused and resumed, and where the
/// connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowConfig {
    /// Queued output above which the producer is paused (by default: this connection's own
    /// reading). Default: 64 KiB.
    pub high_water: usize,
    /// Queued output at or below which a paused producer resumes. Default: 16 KiB.
    pub low_water: usize,
    /// Queued output above which the connection is closed with
    /// [`CloseReason::OutputLimit`]. Default: 4 MiB.
    pub max_output: usize,
}

impl FlowConfig {
    /// Watermarks and cap, made consistent: the low-water mark is at most the high one, and
    /// the cap at least the high one.
    pub fn new(high_water: usize, low_water: usize, max_output: usize) -> Self {
        Self {
            high_water,
            low_water: low_water.min(high_water),
            max_output: max_output.max(high_water),
        }
    }

    /// Watermarks and cap as given, or why they contradict each other (where
    /// [`new`](Self::new) would quietly move one).
    ///
    /// # Errors
    ///
    /// [`FlowError`]: the low-water mark above the high one, or the cap below it.
    pub fn try_new(high_water: usize, low_water: usize, max_output: usize) -> Result<Self, FlowError> {
        if low_water > high_water {
            return Err(FlowError::LowAboveHigh {
                low: low_water,
                high: high_water,
            });
        }
        if max_output < high_water {
            return Err(FlowError::CapBelowHigh {
                cap: max_output,
                high: high_water,
            });
        }
        Ok(Self::new(high_water, low_water, max_output))
    }
}

/// Output watermarks that contradict each other ([`FlowConfig::try_new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The low-water mark is above the high-water mark.
    #[error("the low-water mark ({low} B) must not be above the high-water mark ({high} B)")]
    LowAboveHigh {
        /// The low-water mark.
        low: usize,
        /// The high-water mark.
        high: usize,
    },
    /// The output cap is below the high-water mark.
    #[error("the output cap ({cap} B) must not be below the high-water mark ({high} B)")]
    CapBelowHigh {
        /// The cap.
        cap: usize,
        /// The high-water mark.
        high: usize,
    },
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            max_output: 4 * 1024 * 1024,
        }
    }
}

/// TCP keepalive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

impl Keepalive {
    /// Probes after `idle` without traffic, every `interval`, `count` times.
    pub fn new(idle: Duration, interval: Duration, count: u32) -> Self {
        Self {
            idle,
            interval,
            count,
        }
    }
}

/// Adds `waker` to the tasks to wake, unless it is there already.
fn await_wake(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::producer::tests::Probe;

    #[test]
    fn own_reading_pauses_above_high_water_and_resumes_at_low() {
        let t = Transport::detached();
        assert!(t.may_read());
        t.write(&[0; 64 * 1024]);
        assert!(t.may_read(), "at the mark, not above it");
        t.write(&[0; 1]);
        assert!(!t.may_read());
        t.out().consume(40 * 1024);
        t.output_drained();
        assert!(!t.may_read(), "above the low-water mark still");
        t.out().consume(9 * 1024);
        t.output_drained();
        assert!(t.may_read());
    }

    #[test]
    fn registered_producer_is_paused_resumed_and_stopped() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let t = Transport::detached();
        t.register_producer(Box::new(Probe(log.clone())));
        t.write(&[0; 70 * 1024]);
        t.write(&[0; 1]);
        assert!(t.may_read(), "the producer is paused instead of our reading");
        t.out().consume(70 * 1024);
        t.output_drained();
        t.mark_disconnected();
        assert_eq!(*log.borrow(), vec!["pause", "resume", "stop"]);
        let late = Rc::new(RefCell::new(Vec::new()));
        t.register_producer(Box::new(Probe(late.clone())));
        assert_eq!(
            *late.borrow(),
            vec!["stop"],
            "a closed transport stops a new producer at once"
        );
    }

    /// Streams `left` bytes into its transport from `resume_producing`, as Twisted's push
    /// producers do, in chunks: all at once, or until the output is full if `polite`.
    struct Streamer {
        t: Transport,
        left: usize,
        polite: bool,
        log: Rc<RefCell<Vec<&'static str>>>,
    }

    impl Producer for Streamer {
        fn pause_producing(&mut self) {
            self.log.borrow_mut().push("pause");
        }
        fn resume_producing(&mut self) {
            self.log.borrow_mut().push("resume");
            while self.left > 0 && !(self.polite && self.t.is_output_full()) {
                let n = self.left.min(16 * 1024);
                self.t.write(&vec![0; n]);
                self.left -= n;
            }
        }
    }

    #[test]
    fn a_producer_writing_from_its_resume_is_paused_when_it_returns() {
        for polite in [true, false] {
            let t = Transport::detached();
            let log = Rc::new(RefCell::new(Vec::new()));
            let (t2, log2) = (t.clone(), log.clone());
            t.register_producer(Box::new(Streamer {
                t: t2,
                left: 1 << 20,
                polite,
                log: log2,
            }));
            t.write(&[0; 65 * 1024]);
            t.out().consume(65 * 1024);
            t.output_drained();
            assert!(t.is_output_full(), "polite {polite}");
            assert_eq!(*log.borrow(), ["pause", "resume", "pause"], "polite {polite}");
            let queued = t.buffered();
            if polite {
                assert!(queued <= 80 * 1024, "stopped at the mark: {queued}");
            } else {
                assert_eq!(queued, 1 << 20, "wrote everything in one call, then paused");
            }
        }
    }

    /// Unregisters itself when first paused.
    struct Quitter(Transport, Rc<RefCell<Vec<&'static str>>>);

    impl Producer for Quitter {
        fn pause_producing(&mut self) {
            self.1.borrow_mut().push("pause");
            assert!(self.0.unregister_producer().is_none(), "it is in its callback");
        }
        fn resume_producing(&mut self) {
            self.1.borrow_mut().push("resume");
        }
        fn stop_producing(&mut self) {
            self.1.borrow_mut().push("stop");
        }
    }

    #[test]
    fn a_producer_may_unregister_itself_and_a_replaced_one_is_stopped() {
        let t = Transport::detached();
        let log = Rc::new(RefCell::new(Vec::new()));
        t.register_producer(Box::new(Quitter(t.clone(), log.clone())));
        t.write(&[0; 65 * 1024]);
        assert_eq!(*log.borrow(), ["pause"]);
        assert!(
            !t.may_read(),
            "unregistered: the output pauses our own reading again"
        );
        t.mark_disconnected();
        assert_eq!(*log.borrow(), ["pause"], "gone: no stop for it");

        let t = Transport::detached();
        let (first, second) = (
            Rc::new(RefCell::new(Vec::new())),
            Rc::new(RefCell::new(Vec::new())),
        );
        t.register_producer(Box::new(Probe(first.clone())));
        t.register_producer(Box::new(Probe(second.clone())));
        assert_eq!(*first.borrow(), ["stop"], "replaced, and told so");
        assert!(second.borrow().is_empty());
    }

    #[test]
    fn contradictory_watermarks_are_refused_by_try_new_and_moved_by_new() {
        assert_eq!(
            FlowConfig::try_new(64, 128, 1024),
            Err(FlowError::LowAboveHigh { low: 128, high: 64 })
        );
        assert_eq!(
            FlowConfig::try_new(64, 16, 32),
            Err(FlowError::CapBelowHigh { cap: 32, high: 64 })
        );
        assert_eq!(
            FlowConfig::try_new(64, 16, 1024),
            Ok(FlowConfig::new(64, 16, 1024))
        );
        assert_eq!(FlowConfig::new(64, 128, 32), FlowConfig::new(64, 64, 64));
    }

    /// Refuses frames longer than its limit.
    struct Limited(usize);

    impl Encoder<&[u8]> for Limited {
        type Error = String;

        fn encode(&mut self, frame: &[u8], dst: &mut Vec<u8>) -> Result<(), String> {
            dst.extend_from_slice(frame);
            if frame.len() > self.0 {
                return Err(format!("{} bytes", frame.len()));
            }
            Ok(())
        }
    }

    #[test]
    fn frames_encode_in_place_and_a_refused_one_leaves_nothing() {
        let t = Transport::detached();
        t.write(b"a");
        assert_eq!(t.write_frame(&mut Limited(3), b"bcd"), Ok(()));
        assert_eq!(
            t.write_frame(&mut Limited(3), b"efgh"),
            Err("4 bytes".to_string())
        );
        assert_eq!(t.write_with(|out| out.push(b'!')), ());
        assert_eq!(t.out().chunk(), b"abcd!");
        t.out().consume(5);
        assert_eq!(t.write_with(|out| out.len()), 0, "an emptied output starts at 0");
        t.write(&[0; 64 * 1024]);
        t.write_with(|out| out.push(0));
        assert!(!t.may_read(), "in-place bytes count against the high-water mark");
        t.lose_connection();
        t.abort_connection();
        assert_eq!(t.write_with(|out| out.extend_from_slice(b"late")), ());
        assert_eq!(t.buffered(), 0, "a closed connection drops what is written");
    }

    #[test]
    fn hard_cap_forces_a_close_and_drops_output() {
        let t = Transport::detached();
        for _ in 0..65 {
            t.write(&[0; 64 * 1024]);
        }
        assert_eq!(t.forced(), Some(CloseReason::OutputLimit));
        assert_eq!(t.buffered(), 0);
        t.write(b"more");
        assert_eq!(t.buffered(), 0, "writes after a forced close are dropped");
    }

    #[test]
    fn transports_relay_back_pressure() {
        let upstream = Transport::detached();
        let client = Transport::detached();
        upstream.register_producer(Box::new(client.clone()));
        upstream.write(&[0; 100 * 1024]);
        assert!(
            client.is_reading_paused(),
            "a slow upstream pauses the client's reading"
        );
        upstream.out().consume(100 * 1024);
        upstream.output_drained();
        assert!(!client.is_reading_paused());
        upstream.mark_disconnected();
        assert!(
            client.closing(),
            "losing the consumer closes the producer connection"
        );
    }
}
