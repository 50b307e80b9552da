//! The Protocol and Factory traits: what a weft service implements.

use crate::addr::Address;
use crate::proto::close::CloseReason;
use crate::proto::transport::Transport;

/// One connection's behaviour: Twisted's `IProtocol`, in Rust idiom.
///
/// A protocol instance lives on the shard that accepted its connection and is never sent to
/// another thread. The engine calls, in order: [`connection_made`](Self::connection_made)
/// once; [`data_received`](Self::data_received) for every chunk read (chunk boundaries are
/// arbitrary); [`read_connection_lost`](Self::read_connection_lost) at most once when the peer
/// shuts down its write side; and [`connection_lost`](Self::connection_lost) exactly once at
/// the very end, whatever the path (EOF, local close, reset, abort, error, engine shutdown).
///
/// Callbacks never run re-entrantly: a close or abort requested inside a callback takes effect
/// after it returns. A callback that panics ends its connection alone, with a reset and
/// [`CloseReason::Panicked`] (logged; the protocol is not called again, not even
/// `connection_lost`): the shard and its other connections carry on.
pub trait Protocol: 'static {
    /// The connection is open and `transport` is ready for writes.
    fn connection_made(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// Bytes arrived from the peer.
    fn data_received(&mut self, data: &[u8], transport: &Transport);

    /// The peer shut down its write side (EOF). The default closes the connection once all
    /// queued output is flushed: nothing written so far is lost, but what a task writes
    /// later is (an answer still waiting for a timer or another shard when a client sends
    /// its last request and half-closes). A half-close aware protocol overrides this, keeps
    /// writing, and calls `lose_connection` itself when done; `codec::Answered` does so for
    /// requests answered by async work.
    fn read_connection_lost(&mut self, transport: &Transport) {
        transport.lose_connection();
    }

    /// A `lose_write_connection` finished: everything was flushed and our FIN was sent.
    fn write_connection_lost(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// The queued output, having passed the high-water mark, came down to the low-water
    /// mark: [`Transport::is_output_full`] turned false, and reading resumes. A protocol that
    /// held back work while the output was full (the frames [`Framed`](crate::codec::Framed)
    /// keeps unread) goes on with it here; a registered producer gets `resume_producing`
    /// first.
    fn output_drained(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// The engine is draining for shutdown: its listeners are closed, and connections still
    /// open when the drain timeout passes are aborted (their peers see a reset). Reading goes
    /// on: data already on its way still arrives. The default does nothing, so that the
    /// connection may finish its work; it then stays open until the peer closes it or the
    /// timeout aborts it. A request/response protocol usually stops reading here
    /// ([`Transport::pause_reading`]) and closes after its last answer
    /// ([`Transport::lose_connection`] flushes first); one whose connections sit idle between
    /// requests (keep-alive, a chat) closes them here, at once.
    ///
    /// A connection that other connections write to (a subscriber, a chat member) and that
    /// closed here at once would miss what they still write while they drain: it calls
    /// [`Transport::follow_drain`] (when it subscribes, say), and is then told here only once
    /// no shard of the engine has other work left (or a quarter of the drain timeout is
    /// left), so closing here delivers everything they wrote.
    fn drain_requested(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// The deadline armed with [`Transport::set_deadline`] passed. The protocol may write a
    /// last answer (an HTTP 408, say); the connection then closes after flushing, with
    /// [`CloseReason::DeadlineExpired`]. That close is orderly: it waits up to
    /// `ConnectionConfig::linger` (2 s) for the peer's EOF before the reason is delivered;
    /// a client that wants to reconnect at once calls [`Transport::abort_connection`] here
    /// (the reason is then [`CloseReason::Aborted`]).
    fn deadline_expired(&mut self, transport: &Transport) {
        let _ = transport;
    }

    /// The connection is gone; called exactly once, after the socket is closed.
    fn connection_lost(&mut self, reason: &CloseReason) {
        let _ = reason;
    }
}

/// What a factory is told about the shard it serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardInfo {
    /// Shard index, from 0.
    pub index: usize,
    /// The CPU core the shard runs on.
    pub core: usize,
    /// How many shards the engine runs.
    pub shards: usize,
}

/// Builds protocol instances for one shard: Twisted's `IProtocolFactory`.
///
/// The engine builds one factory per shard (from the closure given to
/// [`EngineBuilder::listen`](crate::EngineBuilder::listen)) on that shard's thread, so a factory need not be
/// `Send` and may keep shard-local state without locks.
pub trait Factory: 'static {
    /// The protocol this factory builds.
    type Protocol: Protocol;

    /// The shard started listening. Called once per shard before any connection. (A client
    /// factory is started by its connector; see [`ClientFactory`](crate::ClientFactory).)
    fn start(&mut self, shard: &ShardInfo) {
        let _ = shard;
    }

    /// The shard's drain began (a shutdown or handoff): its listeners close, and each open
    /// connection gets [`Protocol::drain_requested`] right after this (one that follows the
    /// drain, [`Transport::follow_drain`], later). Called once per shard. A factory holding shard-level work (timers, batches) finishes it here.
    fn drain_started(&mut self) {}

    /// The shard stopped: its listeners are closed and every connection is gone. (A client
    /// factory: its connector stopped trying.)
    fn stop(&mut self) {}

    /// Builds the protocol for a new connection from `peer`, or refuses it with `None`, in
    /// which case the connection is closed at once.
    fn build_protocol(&mut self, peer: &Address) -> Option<Self::Protocol>;

    /// What a connection refused for overload (its shard at
    /// [`AcceptConfig::max_conns_per_shard`](crate::AcceptConfig::max_conns_per_shard))
    /// is told before it is closed: an HTTP `503`, Redis's `-ERR max number of clients
    /// reached`. It is written at once, without a protocol; then what the peer sent is read
    /// and dropped for up to a second, so that the peer reads the answer rather than a reset.
    /// Not on TLS listeners. The default, `None`, closes such a connection at once.
    fn overload_answer(&self) -> Option<&[u8]> {
        None
    }
}

/// A [`Factory`] made from a closure that builds each protocol; see [`factory_fn`].
pub struct FnFactory<B> {
    build: B,
    overload_answer: Option<Box<[u8]>>,
    on_drain_started: Option<Box<dyn FnMut()>>,
    on_stop: Option<Box<dyn FnMut()>>,
}

impl<B> std::fmt::Debug for FnFactory<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnFactory")
    }
}

/// Makes a factory from a closure: `factory_fn(|_peer| Some(MyProtocol::default()))`.
pub fn factory_fn<P, B>(build: B) -> FnFactory<B>
where
    P: Protocol,
    B: FnMut(&Address) -> Option<P> + 'static,
{
    FnFactory {
        build,
        overload_answer: None,
        on_drain_started: None,
        on_stop: None,
    }
}

impl<B> FnFactory<B> {
    /// The factory, telling connections refused for overload `answer` first (see
    /// [`Factory::overload_answer`]).
    #[must_use]
    pub fn with_overload_answer(mut self, answer: impl Into<Vec<u8>>) -> Self {
        self.overload_answer = Some(answer.into().into_boxed_slice());
        self
    }

    /// The factory, running `f` when its shard's drain begins ([`Factory::drain_started`]):
    /// to finish shard-level work, or log, without writing a `Factory` of one's own.
    #[must_use]
    pub fn on_drain_started(mut self, f: impl FnMut() + 'static) -> Self {
        self.on_drain_started = Some(Box::new(f));
        self
    }

    /// The factory, running `f` once its shard stopped ([`Factory::stop`]): every
    /// connection is gone, so shard-level figures are final there.
    #[must_use]
    pub fn on_stop(mut self, f: impl FnMut() + 'static) -> Self {
        self.on_stop = Some(Box::new(f));
        self
    }
}

impl<P, B> Factory for FnFactory<B>
where
    P: Protocol,
    B: FnMut(&Address) -> Option<P> + 'static,
{
    type Protocol = P;

    fn build_protocol(&mut self, peer: &Address) -> Option<P> {
        (self.build)(peer)
    }

    fn overload_answer(&self) -> Option<&[u8]> {
        self.overload_answer.as_deref()
    }

    fn drain_started(&mut self) {
        if let Some(f) = &mut self.on_drain_started {
            f();
        }
    }

    fn stop(&mut self) {
        if let Some(f) = &mut self.on_stop {
            f();
        }
    }
}
