//! A load connection as a weft [`Protocol`], opened with weft's client ([`connect_tcp`]): it
//! writes requests through its [`Transport`], reads responses in `data_received`, and
//! records each latency on its core. A *slot* is one of the run's `--conns` connections; it
//! outlives reconnections, so an open-loop schedule carries on across them. Its
//! [`ClientFactory`] counts failed connects and reconnects (at once after a connection that
//! answered, else with the back-off of a [`ReconnectPolicy`]). The pacer task of an
//! open-loop slot lives here too.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;

use super::exchange::Exchange;
use super::recorder::{ErrorKind, Recorder};
use super::schedule::{Backlog, Sent};
use super::workload::RandomKeys;
use crate::addr::Address;
use crate::driver::connector::{ClientFactory, Connector, connect_tcp};
use crate::driver::tasks::sleep;
use crate::proto::client::{ConnectError, ConnectOptions};
use crate::proto::close::CloseReason;
use crate::proto::protocol::{Factory, Protocol};
use crate::proto::reconnect::ReconnectPolicy;
use crate::proto::tls::{ClientTls, HandshakeResult};
use crate::proto::transport::Transport;

/// Reconnecting after a failed connect, or after a connection that answered nothing: 10 ms,
/// doubling up to 1 s.
fn retry_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(10),
        factor: 2.0,
        max_delay: Duration::from_secs(1),
        jitter: 0.1,
        max_retries: None,
    }
}

/// How the run's first connection attempt ended, the first of every core's: the check that
/// the target listens, made with the run's own connections rather than a probe of its own
/// (which the server would count, and a TLS server log as a failed handshake).
#[derive(Debug, Default)]
pub(crate) struct FirstContact {
    /// `None` until the first attempt ends; then `Some(None)` if it reached the target (a
    /// TLS handshake that failed did), or `Some(Some(error))`.
    outcome: Mutex<Option<Option<ConnectError>>>,
    settled: Condvar,
}

impl FirstContact {
    /// Records an attempt's end, if it is the first.
    fn settle(&self, outcome: Option<ConnectError>) {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if o.is_none() {
            *o = Some(outcome);
            self.settled.notify_all();
        }
    }

    /// Waits up to `limit` for the first attempt to end: `Ok(())` if it reached the target
    /// or none ended in time, the connect error if it failed.
    pub(crate) fn wait(&self, limit: Duration) -> Result<(), ConnectError> {
        let o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        let (o, _) = self
            .settled
            .wait_timeout_while(o, limit, |o| o.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        match o.as_ref() {
            Some(Some(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}

/// What every connection of one core shares.
pub(crate) struct Core {
    /// The request repeated `pipeline` times: `n` requests are its first `n * len` bytes.
    batch: Vec<u8>,
    request_len: usize,
    pub(crate) recorder: RefCell<Recorder>,
    /// When the run starts: connections open before it, and send nothing until then.
    start: Instant,
    /// The run is over: count nothing more, reconnect no more.
    pub(crate) stopping: Cell<bool>,
    /// Each connection carries one batch of requests, then closes and a new one opens (a
    /// TLS handshake per request: a full one if the client TLS resumes no session).
    one_shot: bool,
    /// The first protocol error was logged (with its detail; later ones are only counted).
    protocol_error_told: Cell<bool>,
    /// Where the first connection attempt's end is told, shared by every core.
    first: Arc<FirstContact>,
    /// Random keys written into each request sent, and the generator of their numbers.
    keys: Option<RandomKeys>,
    rng: Cell<u64>,
}

impl Core {
    pub(crate) fn new(
        request: &[u8],
        pipeline: usize,
        one_shot: bool,
        start: Instant,
        first: Arc<FirstContact>,
        keys: Option<RandomKeys>,
        seed: u64,
    ) -> Self {
        Self {
            keys,
            // Xorshift never leaves 0: any other seed will do.
            rng: Cell::new(seed | 1),
            batch: request.repeat(pipeline.max(1)),
            request_len: request.len(),
            recorder: RefCell::new(Recorder::default()),
            start,
            stopping: Cell::new(false),
            one_shot,
            protocol_error_told: Cell::new(false),
            first,
        }
    }
}

/// One of the run's connections, across reconnections.
pub(crate) struct Slot {
    exchange: Exchange,
    transport: Option<Transport>,
    /// The pacer, parked until the connection opens, its window frees, or it ends.
    pacer: Option<Waker>,
    woken: bool,
    /// This side is tearing the current connection down (a timeout or a protocol error,
    /// already counted).
    dropped: bool,
    /// Responses on the current connection.
    answered: u64,
}

impl Slot {
    pub(crate) fn new(exchange: Exchange) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Self {
            exchange,
            transport: None,
            pacer: None,
            woken: false,
            dropped: false,
            answered: 0,
        }))
    }

    /// Wakes the pacer (to see a new connection, room in the window, or the end of the run).
    pub(crate) fn wake_pacer(&mut self) {
        self.woken = true;
        if let Some(w) = self.pacer.take() {
            w.wake();
        }
    }

    /// Sends what may go out at `now` as one write: nothing before the run starts or after
    /// it ends. A one-shot connection sends nothing more after its first write (in an open
    /// loop, that is when its first request falls due).
    pub(crate) fn send(&mut self, core: &Core, now: Instant) {
        let Some(t) = &self.transport else { return };
        if now < core.start || core.stopping.get() {
            return;
        }
        let n = self.exchange.claim(now);
        if n > 0 {
            let batch = &core.batch[..n * core.request_len];
            match &core.keys {
                None => t.write(batch),
                Some(keys) => t.write_with(|out| {
                    let at = out.len();
                    out.extend_from_slice(batch);
                    let mut rng = core.rng.get();
                    for request in out[at..].chunks_exact_mut(core.request_len) {
                        keys.fill(request, &mut rng);
                    }
                    core.rng.set(rng);
                }),
            }
            if core.one_shot {
                self.exchange.stop_sending();
            }
        }
    }

    /// True while requests written on the open connection wait for their answers.
    pub(crate) fn awaiting(&self) -> bool {
        self.transport.is_some() && !self.dropped && self.exchange.oldest().is_some()
    }

    /// At the end of a run: the requests with no answer (see [`Exchange::unanswered`]),
    /// leaving out those of a connection that is gone or being dropped (already counted as
    /// its error).
    pub(crate) fn unanswered(&mut self, end: Instant, each: impl FnMut(Sent)) -> Option<Backlog> {
        if self.transport.is_none() || self.dropped {
            self.exchange.reset();
        }
        self.exchange.unanswered(end, each)
    }

    /// The core's timeout check: aborts the connection if its oldest request has waited
    /// longer than `timeout` since it was written, recording the latencies of the requests
    /// given up with it at their waits so far; returns true if it did.
    pub(crate) fn check_timeout(&mut self, now: Instant, timeout: Duration, recorder: &mut Recorder) -> bool {
        let expired = self
            .exchange
            .oldest()
            .is_some_and(|s| now.saturating_duration_since(s.sent) > timeout);
        match &self.transport {
            Some(t) if expired && !self.dropped => {
                self.dropped = true;
                t.abort_connection();
                self.exchange.abandon(|sent| recorder.timed_out(&sent, now));
                true
            }
            _ => false,
        }
    }
}

/// The protocol of one load connection.
struct LoadProtocol {
    slot: Rc<RefCell<Slot>>,
    core: Rc<Core>,
}

impl Protocol for LoadProtocol {
    fn connection_made(&mut self, transport: &Transport) {
        self.core.first.settle(None);
        let mut slot = self.slot.borrow_mut();
        slot.exchange.reset();
        slot.transport = Some(transport.clone());
        slot.dropped = false;
        slot.answered = 0;
        slot.send(&self.core, Instant::now());
        slot.wake_pacer();
    }

    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        let now = Instant::now();
        let mut slot = self.slot.borrow_mut();
        let slot = &mut *slot;
        if slot.dropped {
            return;
        }
        let was_full = slot.exchange.window_full();
        let mut recorder = self.core.recorder.borrow_mut();
        let mut answered = 0;
        let result = slot.exchange.receive(data, |sent, verdict| {
            recorder.response(sent, now, verdict);
            answered += 1;
        });
        slot.answered += answered;
        if let Err(e) = result {
            if !self.core.protocol_error_told.replace(true) {
                // The first one on this core says why; the count says how often.
                tracing::warn!("weft load: a response is not what was expected: {e}");
            }
            recorder.error(ErrorKind::Protocol);
            slot.dropped = true;
            transport.abort_connection();
            return;
        }
        drop(recorder);
        if slot.exchange.closing() {
            if !slot.exchange.outstanding() {
                transport.lose_connection();
            }
            return;
        }
        slot.send(&self.core, now);
        if answered > 0 && was_full {
            // The pacer parked on a full window: let it wait for the next due time.
            slot.wake_pacer();
        }
    }

    fn read_connection_lost(&mut self, transport: &Transport) {
        let now = Instant::now();
        let mut slot = self.slot.borrow_mut();
        let slot = &mut *slot;
        let mut recorder = self.core.recorder.borrow_mut();
        let answered = &mut slot.answered;
        slot.exchange.finish(|sent, verdict| {
            recorder.response(sent, now, verdict);
            // A response that ends with its connection answered: the next connection opens
            // at once, not after a back-off.
            *answered += 1;
        });
        transport.lose_connection();
    }

    fn connection_lost(&mut self, reason: &CloseReason) {
        let mut slot = self.slot.borrow_mut();
        slot.transport = None;
        slot.wake_pacer();
        if self.core.stopping.get() || slot.dropped {
            return;
        }
        let kind = match reason {
            CloseReason::Reset => Some(ErrorKind::Reset),
            CloseReason::Io(_) => Some(ErrorKind::Io),
            _ if slot.exchange.outstanding() => Some(ErrorKind::ShortRead),
            _ => None,
        };
        if let Some(kind) = kind {
            self.core.recorder.borrow_mut().error(kind);
        }
    }
}

/// Opens slot `slot`'s connection to `target` with weft's client; the connector keeps it
/// open (reconnecting) until [`Connector::disconnect`].
pub(crate) fn open(
    core: Rc<Core>,
    slot: Rc<RefCell<Slot>>,
    target: SocketAddr,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
) -> Connector {
    let options = ConnectOptions::default()
        .with_timeout(connect_timeout)
        .with_reconnect(Some(retry_policy()))
        .with_tls(tls);
    connect_tcp(target, SlotFactory { core, slot }, options)
}

/// Builds the protocol of each of a slot's connections, and hears how they end.
struct SlotFactory {
    core: Rc<Core>,
    slot: Rc<RefCell<Slot>>,
}

impl Factory for SlotFactory {
    type Protocol = LoadProtocol;

    fn build_protocol(&mut self, _peer: &Address) -> Option<LoadProtocol> {
        Some(LoadProtocol {
            slot: self.slot.clone(),
            core: self.core.clone(),
        })
    }
}

/// True for a handshake failure that every connection would meet again: the server's
/// certificate refused, or no TLS version, cipher suite or ALPN protocol in common.
pub(crate) fn handshake_fails_always(result: HandshakeResult) -> bool {
    matches!(
        result,
        HandshakeResult::Certificate | HandshakeResult::Incompatible
    )
}

/// A failed handshake's `detail` (rustls' words) followed by what to do about it, in plain
/// words, for the failures whose cure is known.
pub(crate) fn handshake_failure_text(detail: &str) -> String {
    const ADVICE: [(&str, &str); 6] = [
        (
            "CaUsedAsEndEntity",
            "the server presents a CA certificate as its own (a self-signed certificate made \
             with `openssl req -x509` is a CA), which TLS clients refuse: give the server a \
             certificate signed by a CA and pass that CA with --tls-ca, or check nothing with \
             --tls-insecure (test servers only)",
        ),
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA this run trusts: pass its CA with \
             --tls-ca FILE, or check nothing with --tls-insecure (test servers only)",
        ),
        (
            "NotValidForName",
            "the server's certificate is not for the name connected to: give the name it \
             carries with --tls-server-name NAME",
        ),
        (
            "Expired",
            "the server's certificate has expired (or this machine's clock is wrong)",
        ),
        (
            "NotValidYet",
            "the server's certificate is not valid yet (or this machine's clock is wrong)",
        ),
        (
            "NoApplicationProtocol",
            "the server speaks none of the ALPN protocols offered: check --alpn",
        ),
    ];
    match ADVICE.iter().find(|(mark, _)| detail.contains(mark)) {
        Some((_, advice)) => format!("{detail}: {advice}"),
        None => detail.to_owned(),
    }
}

impl ClientFactory for SlotFactory {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &ConnectError) {
        match reason {
            ConnectError::Cancelled => {}
            // A failure that would repeat on every connection stops the run, as a refused
            // first connection does.
            ConnectError::Tls { result, .. } if handshake_fails_always(*result) => {
                self.core.first.settle(Some(reason.clone()));
            }
            // Another failed handshake: the target listens.
            ConnectError::Tls { .. } => self.core.first.settle(None),
            e => self.core.first.settle(Some(e.clone())),
        }
        if self.core.stopping.get() {
            return;
        }
        let kind = match reason {
            ConnectError::Cancelled => return,
            ConnectError::Refused { .. } => ErrorKind::ConnectRefused,
            ConnectError::TimedOut { .. } => ErrorKind::ConnectTimeout,
            ConnectError::Tls { detail, .. } => {
                self.core
                    .recorder
                    .borrow_mut()
                    .tls_failure(&handshake_failure_text(detail));
                return;
            }
            _ => ErrorKind::ConnectFailed,
        };
        self.core.recorder.borrow_mut().error(kind);
    }

    fn client_connection_lost(&mut self, connector: &Connector, _reason: &CloseReason) {
        // A connection that answered is replaced at once; one that did not is retried with
        // the policy's back-off, so that a server that accepts and drops is not hammered.
        if !self.core.stopping.get() && self.slot.borrow().answered > 0 {
            let _ = connector.connect();
        }
    }
}

/// Sends slot `slot`'s open-loop requests when they fall due (responses send the ones that
/// were waiting for room in the window). Returns when the run stops.
pub(crate) async fn pace(core: Rc<Core>, slot: Rc<RefCell<Slot>>) {
    loop {
        if core.stopping.get() {
            return;
        }
        let due = {
            let s = slot.borrow();
            if s.transport.is_some() {
                s.exchange.next_due()
            } else {
                None
            }
        };
        match due {
            None => park(&slot).await,
            Some(at) => {
                let now = Instant::now();
                if at > now {
                    // The slot wakes the pacer when the run ends, so that a slow schedule
                    // (one request every conns/rate seconds) does not hold the run open.
                    future::or(sleep(at - now), park(&slot)).await;
                } else {
                    slot.borrow_mut().send(&core, now);
                }
            }
        }
    }
}

/// Waits until the slot wakes its pacer.
async fn park(slot: &RefCell<Slot>) {
    poll_fn(|cx| {
        let mut s = slot.borrow_mut();
        if s.woken {
            s.woken = false;
            Poll::Ready(())
        } else {
            s.pacer = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
}
