//! A client for pipelined request/response protocols on a shard: [`Pipeline`], one
//! persistent connection made and remade by a [`Connector`], whose calls are matched with
//! their replies in order by `proto::pipeline`'s [`CallQueue`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;

use super::connector::{ClientFactory, Connector, connect_tcp};
use super::tasks::{Elapsed, is_draining, timeout};
use crate::addr::Address;
use crate::proto::client::{ConnectError, ConnectOptions, ConnectorState, Destination};
use crate::proto::close::CloseReason;
use crate::proto::codec::{Decoder, Encoder, FrameHandler, Framed};
use crate::proto::pipeline::{CallError, CallId, CallQueue, Outage};
use crate::proto::producer::Producer;
use crate::proto::protocol::Factory;
use crate::proto::reconnect::ReconnectPolicy;
use crate::proto::transport::Transport;

/// Options of a [`Pipeline`]; every field documents its default. Start from
/// [`PipelineOptions::default()`] and set what matters (the type is `#[non_exhaustive]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipelineOptions {
    /// How the connection is made: its timeout, TLS, keepalive, bind address, and the
    /// [`ReconnectPolicy`] that remakes it after a failure or a loss. While the policy waits
    /// out a back-off, calls fail at once with [`CallError::Reconnecting`], so the policy's
    /// `max_delay` is also how long calls may be refused after the upstream is back. Without
    /// a policy, a call made while no connection is open starts an attempt and waits for it.
    /// Default: [`ConnectOptions::default()`] with a policy that starts at 100 ms and waits at
    /// most 5 s.
    pub connect: ConnectOptions,
    /// The most calls at once, in flight or waiting for a connection; calls timed out whose
    /// replies have not come yet count, since their requests are still on the connection.
    /// A call past it fails at once with [`CallError::Overloaded`]. At least 1. Default: 1024.
    pub max_calls: usize,
    /// How long a call may take, from the call to its reply (waiting for a connection
    /// included), before it fails with [`CallError::TimedOut`]; `None` for no limit.
    /// Default: 30 s.
    pub call_timeout: Option<Duration>,
}

impl PipelineOptions {
    /// Sets [`connect`](Self::connect).
    #[must_use]
    pub fn with_connect(mut self, connect: ConnectOptions) -> Self {
        self.connect = connect;
        self
    }

    /// Sets [`max_calls`](Self::max_calls).
    #[must_use]
    pub fn with_max_calls(mut self, max_calls: usize) -> Self {
        self.max_calls = max_calls;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, call_timeout: Option<Duration>) -> Self {
        self.call_timeout = call_timeout;
        self
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let reconnect = ReconnectPolicy::default()
            .with_initial_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5));
        Self {
            connect: ConnectOptions::default().with_reconnect(Some(reconnect)),
            max_calls: 1024,
            call_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Calls to an upstream over one persistent connection per shard, pipelined: each request is
/// written as soon as it is made, and replies are matched with their calls in order (one
/// reply per request, as HTTP/1.1, RESP or a line protocol answer).
///
/// Made on a shard with [`connect`](Self::connect) from the upstream's address, a function
/// that makes a decoder of its replies and an encoder of its requests (one pair per
/// connection), and [`PipelineOptions`]. Cheap to clone (an `Rc`): every task and
/// every connection's answers on that shard call through the same connection with
/// [`call`](Self::call). Make one per shard, in the closure given to
/// [`Service::listen`](crate::Service::listen) (which runs on each shard) or in
/// [`shard_state`](crate::EngineBuilder::shard_state).
///
/// - **Bounded**: at most [`max_calls`](PipelineOptions::max_calls) calls at once; one
///   more is refused with [`CallError::Overloaded`], for the caller to shed.
/// - **Timeouts**: a call that passes [`call_timeout`](PipelineOptions::call_timeout)
///   fails with [`CallError::TimedOut`]; so does one whose future is dropped. Its request
///   is still on the connection: its reply is read and dropped when it comes, and the
///   replies after it still reach their calls.
/// - **Failures**: when the connection ends, every call in flight on it fails with
///   [`CallError::ConnectionLost`] (or [`CallError::BadReply`] when a reply did not
///   decode: the connection is reset then, since nothing after it can be matched); a call
///   waiting for an attempt that fails gets [`CallError::ConnectFailed`] with its reason.
/// - **Reconnecting**: the connection is remade by the connect options'
///   [`ReconnectPolicy`] (by default within 5 s); while the policy waits out its back-off,
///   calls fail at once with [`CallError::Reconnecting`] instead of waiting for it
///   ([`Connector::connected`] would hold them for the whole delay). When no attempt runs
///   and none is due (no policy, or one that gave up), a call starts one.
/// - **Drain**: once the shard's drain begins, the connection closes as soon as no call is
///   in flight or waiting (and is aborted once the only calls in flight timed out: nobody
///   awaits their replies), so that an idle or unanswering upstream does not hold the drain
///   up to its timeout; calls made during the drain still work (a call connects again if it must,
///   and that connection closes after its replies in turn).
/// - **Back-pressure on the connection**: a call waits for [`Transport::writable`] before
///   it writes, so requests to an upstream that reads slowly queue at most about the
///   high-water mark, and the replies are read meanwhile.
///
/// ```no_run
/// use std::time::Duration;
/// use weft::client::{Pipeline, PipelineOptions};
/// use weft::codec::{LineDecoder, LineEncoder};
///
/// # async fn ask() -> Result<(), Box<dyn std::error::Error>> {
/// // On a shard: a line upstream, each request line answered by one line.
/// let upstream = Pipeline::connect(
///     "127.0.0.1:7000".parse::<std::net::SocketAddr>()?,
///     || (LineDecoder::new(16 * 1024), LineEncoder::lf()),
///     PipelineOptions::default().with_call_timeout(Some(Duration::from_secs(2))),
/// );
/// let (a, b) = futures_lite::future::zip(upstream.call("GET a"), upstream.call("GET b")).await;
/// println!("{:?} {:?}", a?, b?);
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<D: Decoder, E> {
    shared: Rc<Shared<D, E>>,
}

impl<D: Decoder, E> Clone for Pipeline<D, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
        }
    }
}

impl<D: Decoder, E> fmt::Debug for Pipeline<D, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("connector", &self.shared.connector)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// What a pipeline's handles, its calls and its connection share.
struct Shared<D: Decoder, E> {
    connector: Connector,
    call_timeout: Option<Duration>,
    calls: RefCell<CallQueue<D::Frame>>,
    /// The open connection and the encoder of its requests.
    link: RefCell<Option<(Transport, E)>>,
    /// Why the upstream is down, the latest first.
    outage: RefCell<Option<Outage>>,
    /// Connection attempts that failed, for the calls that wait for one.
    failures: Cell<u64>,
    /// Why the open connection's replies stopped making sense, once they did.
    bad_reply: RefCell<Option<String>>,
    /// Wakes the calls that wait for the connection to change.
    changes: Changes,
    closed: Cell<bool>,
}

impl<D: Decoder + 'static, E: 'static> Pipeline<D, E> {
    /// Starts connecting to `destination` from this shard (the first attempt starts at once)
    /// and returns the pipeline that calls through the connection. `codec` makes the decoder
    /// of the replies and the encoder of the requests for each connection (a pair that share
    /// state, such as [`ResponseDecoder`](crate::http::ResponseDecoder) and its
    /// [`request_encoder`](crate::http::ResponseDecoder::request_encoder), is made together).
    ///
    /// The connection is the shard's, as with [`connect_tcp`]: it drains with the engine
    /// (closing once its calls are answered) and is counted in its metrics. Dropping every
    /// handle of the pipeline closes it after flushing what was written.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor (an engine shard, or a bare `LocalExecutor`).
    pub fn connect<C>(destination: impl Into<Destination>, codec: C, options: PipelineOptions) -> Self
    where
        C: FnMut() -> (D, E) + 'static,
    {
        let shared = Rc::new_cyclic(|shared: &Weak<Shared<D, E>>| {
            let dial = Dial {
                shared: shared.clone(),
                codec,
            };
            Shared {
                connector: connect_tcp(destination, dial, options.connect),
                call_timeout: options.call_timeout,
                calls: RefCell::new(CallQueue::new(options.max_calls.max(1))),
                link: RefCell::new(None),
                outage: RefCell::new(None),
                failures: Cell::new(0),
                bad_reply: RefCell::new(None),
                changes: Changes::default(),
                closed: Cell::new(false),
            }
        });
        Self { shared }
    }

    /// Sends `request` and resolves with its reply. The request is written at once when the
    /// connection is open (after the calls made before it), or once it opens; several calls
    /// are in flight at once, each answered by its own reply.
    ///
    /// # Errors
    ///
    /// A [`CallError`] saying why no reply came: the bound reached, the connection not made
    /// or lost, the upstream reconnecting, a reply that did not decode, the request refused by
    /// the encoder, the call timeout, or the pipeline closed.
    pub async fn call<Req>(&self, request: Req) -> Result<D::Frame, CallError>
    where
        E: Encoder<Req>,
    {
        let call = self.shared.call(request);
        match self.shared.call_timeout {
            None => call.await,
            Some(limit) => timeout(limit, call)
                .await
                .unwrap_or_else(|Elapsed(after)| Err(CallError::TimedOut(after))),
        }
    }

    /// Closes the pipeline: new calls fail with [`CallError::Closed`], the calls in flight
    /// get their replies, then the connection closes, and this resolves with how it ended
    /// (`None` when none was open). The connector stops trying.
    pub async fn close(&self) -> Option<CloseReason> {
        let s = &self.shared;
        s.closed.set(true);
        s.connector.stop_trying();
        s.changes.notify();
        let open = s.link.borrow().as_ref().map(|(t, _)| t.clone());
        s.close_if_done();
        match open {
            Some(t) => Some(t.closed().await),
            None => None,
        }
    }
}

impl<D: Decoder, E> Pipeline<D, E> {
    /// Calls that count against [`max_calls`](PipelineOptions::max_calls) now: in flight
    /// (timed-out ones whose replies have not come included) or waiting for a connection.
    pub fn calls(&self) -> usize {
        self.shared.calls.borrow().count()
    }
}

/// Where a call stands with its pipeline, given back when the call's future ends however it
/// ends: an admitted call withdrawn, a sent one abandoned (its reply is dropped when it
/// comes).
struct Ticket<'a, D: Decoder, E> {
    shared: &'a Shared<D, E>,
    sent: Option<CallId>,
    answered: bool,
}

impl<D: Decoder, E> Drop for Ticket<'_, D, E> {
    fn drop(&mut self) {
        match self.sent {
            None => {
                self.shared.calls.borrow_mut().withdraw();
                self.shared.close_if_done();
            }
            Some(id) if !self.answered => {
                self.shared.calls.borrow_mut().abandon(id);
                self.shared.close_if_done();
            }
            Some(_) => {}
        }
    }
}

impl<D: Decoder, E> Shared<D, E> {
    /// A call without its timeout.
    async fn call<Req>(&self, request: Req) -> Result<D::Frame, CallError>
    where
        E: Encoder<Req>,
    {
        if self.closed.get() {
            return Err(CallError::Closed);
        }
        self.calls.borrow_mut().admit()?;
        let mut ticket = Ticket {
            shared: self,
            sent: None,
            answered: false,
        };
        let failures = self.failures.get();
        let id = loop {
            let seen = self.changes.generation();
            if self.closed.get() {
                return Err(CallError::Closed);
            }
            if self.failures.get() > failures
                && let Some(Outage::ConnectFailed(e)) = &*self.outage.borrow()
            {
                return Err(CallError::ConnectFailed(e.clone()));
            }
            let full = {
                let mut link = self.link.borrow_mut();
                match link.as_mut() {
                    Some((t, encoder)) if t.is_connected() => {
                        if t.is_output_full() {
                            Some(t.clone())
                        } else {
                            t.write_frame(encoder, request)
                                .map_err(|e| CallError::Encode(e.to_string()))?;
                            break self.calls.borrow_mut().sent();
                        }
                    }
                    _ => None,
                }
            };
            if let Some(t) = full {
                t.writable().await;
                continue;
            }
            // No open connection: wait for the one being made (or closed), start one when
            // nothing else will, and refuse while the reconnect policy waits out its back-off.
            if self.connector.state() == ConnectorState::Disconnected {
                if self.connector.is_idle() {
                    // Disconnected and idle, so this cannot be refused.
                    let _ = self.connector.connect();
                    continue;
                }
                if let Some(outage) = self.outage.borrow().clone() {
                    return Err(CallError::Reconnecting(outage));
                }
            }
            self.changes.since(seen).await;
        };
        ticket.sent = Some(id);
        let reply = poll_fn(|cx| self.calls.borrow_mut().poll_reply(id, cx)).await;
        ticket.answered = true;
        reply
    }

    /// Closes the connection once the pipeline is closed or the shard drains, and no call is
    /// in flight or waiting; aborts it when the only calls in flight timed out (their replies
    /// would go nowhere, and an upstream that never answers must not hold the drain).
    fn close_if_done(&self) {
        if !(self.closed.get() || is_draining()) {
            return;
        }
        let (idle, orphaned) = {
            let calls = self.calls.borrow();
            (calls.is_idle(), calls.only_abandoned())
        };
        if let Some((t, _)) = &*self.link.borrow() {
            if idle {
                t.lose_connection();
            } else if orphaned {
                t.abort_connection();
            }
        }
    }

    /// A reply came on the open connection.
    fn reply_received(&self, reply: D::Frame, t: &Transport) {
        let taken = self.calls.borrow_mut().reply(reply);
        match taken {
            Ok(waker) => {
                if let Some(w) = waker {
                    w.wake();
                }
                self.close_if_done();
            }
            Err(_) => self.reply_unusable("a reply came with no call waiting for it".into(), t),
        }
    }

    /// The replies on the open connection cannot be matched any more: reset it, and fail the
    /// calls in flight with `detail`.
    fn reply_unusable(&self, detail: String, t: &Transport) {
        tracing::warn!(peer = %t.peer_addr(), "the upstream's reply cannot be used ({detail}): the connection is reset");
        *self.bad_reply.borrow_mut() = Some(detail);
        t.abort_connection();
    }

    /// The open connection ended: every call in flight fails.
    fn connection_lost(&self, reason: &CloseReason) {
        self.link.borrow_mut().take();
        let error = match self.bad_reply.borrow_mut().take() {
            Some(detail) => CallError::BadReply(detail),
            None => CallError::ConnectionLost(reason.clone()),
        };
        let wakers = self.calls.borrow_mut().fail_sent(&error);
        *self.outage.borrow_mut() = Some(Outage::Lost(reason.clone()));
        self.changes.notify();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A connection attempt failed.
    fn connect_failed(&self, reason: &ConnectError) {
        self.failures.set(self.failures.get() + 1);
        *self.outage.borrow_mut() = Some(Outage::ConnectFailed(reason.clone()));
        self.changes.notify();
    }
}

impl<D: Decoder, E> Drop for Shared<D, E> {
    fn drop(&mut self) {
        self.connector.disconnect();
    }
}

/// A generation count of the connection's changes (made, lost, an attempt failed, the
/// pipeline closed), and the wakers of the calls waiting for the next: one slot per waiting
/// call, freed when its wait ends however it ends, so that calls given up on leave nothing.
#[derive(Default)]
struct Changes {
    generation: Cell<u64>,
    waiters: RefCell<Slab<Waker>>,
}

impl Changes {
    fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().collect();
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Resolves once a change came after generation `seen`.
    async fn since(&self, seen: u64) {
        let mut wait = ChangeWait {
            changes: self,
            seen,
            slot: None,
        };
        poll_fn(|cx| {
            if self.generation.get() != seen {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            match wait.slot.and_then(|k| waiters.get_mut(k)) {
                Some(w) => w.clone_from(cx.waker()),
                None => wait.slot = Some(waiters.insert(cx.waker().clone())),
            }
            Poll::Pending
        })
        .await;
    }
}

/// A call's slot among the waiters of [`Changes`], given back when its wait ends. The slot is
/// its own only while the generation it waits past is current: a change empties the waiters,
/// and their keys go to waits that come after.
struct ChangeWait<'a> {
    changes: &'a Changes,
    seen: u64,
    slot: Option<usize>,
}

impl Drop for ChangeWait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.slot
            && self.changes.generation.get() == self.seen
        {
            self.changes.waiters.borrow_mut().try_remove(k);
        }
    }
}

/// The pipeline's [`ClientFactory`]: builds each connection's protocol from a fresh decoder
/// and encoder, and tells the pipeline how attempts and connections end.
struct Dial<D: Decoder, E, C> {
    shared: Weak<Shared<D, E>>,
    codec: C,
}

impl<D, E, C> Factory for Dial<D, E, C>
where
    D: Decoder + 'static,
    E: 'static,
    C: FnMut() -> (D, E) + 'static,
{
    type Protocol = Framed<Link<D, E>>;

    fn build_protocol(&mut self, _peer: &Address) -> Option<Self::Protocol> {
        let (decoder, encoder) = (self.codec)();
        let link = Link {
            shared: self.shared.clone(),
            encoder: Some(encoder),
        };
        Some(Framed::new(decoder, link))
    }
}

impl<D, E, C> ClientFactory for Dial<D, E, C>
where
    D: Decoder + 'static,
    E: 'static,
    C: FnMut() -> (D, E) + 'static,
{
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &ConnectError) {
        if let Some(s) = self.shared.upgrade() {
            s.connect_failed(reason);
        }
    }

    /// Called for every loss, a panicked protocol's included (which hears no
    /// `connection_lost` of its own).
    fn client_connection_lost(&mut self, _connector: &Connector, reason: &CloseReason) {
        if let Some(s) = self.shared.upgrade() {
            s.connection_lost(reason);
        }
    }
}

/// One connection of a pipeline: hands the pipeline its transport and encoder when it
/// opens, and each reply as it is decoded.
struct Link<D: Decoder, E> {
    shared: Weak<Shared<D, E>>,
    /// The encoder made with this connection's decoder, until the connection opens.
    encoder: Option<E>,
}

impl<D: Decoder + 'static, E: 'static> FrameHandler for Link<D, E> {
    type Decoder = D;

    fn connection_made(&mut self, t: &Transport) {
        let (Some(s), Some(encoder)) = (self.shared.upgrade(), self.encoder.take()) else {
            // The pipeline is gone.
            t.lose_connection();
            return;
        };
        // The calls are this connection's producer: they wait for `writable` themselves, so
        // pausing them takes nothing, and with a producer registered a full output does not
        // stop the replies from being read.
        t.register_producer(Box::new(Requests));
        *s.link.borrow_mut() = Some((t.clone(), encoder));
        s.changes.notify();
        s.close_if_done();
    }

    fn frame_received(&mut self, reply: D::Frame, t: &Transport) {
        if let Some(s) = self.shared.upgrade() {
            s.reply_received(reply, t);
        }
    }

    fn decode_failed(&mut self, error: D::Error, t: &Transport) {
        match self.shared.upgrade() {
            Some(s) => s.reply_unusable(error.to_string(), t),
            None => t.abort_connection(),
        }
    }

    fn drain_requested(&mut self, _t: &Transport) {
        if let Some(s) = self.shared.upgrade() {
            s.close_if_done();
        }
    }
}

/// The calls, as the producer registered on their connection (see `Link::connection_made`).
struct Requests;

impl Producer for Requests {
    fn pause_producing(&mut self) {}

    fn resume_producing(&mut self) {}
}
