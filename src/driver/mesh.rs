//! Cross-shard calls: every shard has an inbox that other shards (and threads outside the
//! engine) send closures to; the shard runs them against its [state](crate::shard::state)
//! and sends the result back to the caller's inbox.
//!
//! ```text
//!   shard A                                   shard B
//!   submit_to(B, f) ──request (bounded)──▶ inbox B: f(&state) ─┐
//!        ▲                                                      │
//!        └───────────── reply (to A's inbox) ◀──────────────────┘
//! ```
//!
//! Each inbox is two crossbeam channels, a bounded one for requests (a full one makes callers
//! wait for room: back-pressure, no unbounded growth) and an unbounded one for replies and
//! room notices (bounded in practice by the requests in flight), plus a socket pair whose
//! one byte wakes the shard's reactor; a wake-up already pending is not repeated, so a burst
//! of calls costs one. A shard's inbox closes when the shard stops: calls queued there are
//! answered with [`CallError::ShardStopped`] as they are dropped, and later ones fail at once.

use std::any::Any;
use std::cell::RefCell;
use std::future::poll_fn;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use slab::Slab;

use super::shard::ShardCtx;
use crate::metrics::LatencyMetric;
use crate::proto::drain::DrainBarrier;
use crate::stats::ShardStats;
use crate::sys;

/// The round trip of a cross-shard call, measured by its caller, per target shard.
pub(crate) static SHARD_CALL: LatencyMetric = LatencyMetric::per_target(
    "shard_call",
    "Round trip of a cross-shard call (submit_to), from send to reply, on the calling shard.",
    "target",
);

/// Why a cross-shard call did not run, or did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The target shard has stopped (or stopped before it ran the call): the engine is
    /// shutting down.
    #[error("shard {0} has stopped")]
    ShardStopped(usize),
    /// There is no shard with that index.
    #[error("no shard {shard}: the engine runs {shards}")]
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// How many shards the engine runs.
        shards: usize,
    },
    /// The target shard has no state of the type the call expects (see
    /// [`EngineBuilder::shard_state`](crate::EngineBuilder::shard_state)).
    #[error("shard {shard} has no state of type {type_name}")]
    NoState {
        /// The target shard.
        shard: usize,
        /// The state type asked for.
        type_name: &'static str,
    },
    /// The call panicked on the target shard (which carries on).
    #[error("the call panicked on shard {0}")]
    Panicked(usize),
    /// Called outside an engine's shard, where there is no mesh to send through.
    #[error("not on an engine shard")]
    NotOnShard,
}

/// A message for a shard: run there, or (dropped unrun) tell its sender why not.
trait Message: Send {
    fn run(self: Box<Self>, shard: &ShardCtx);
}

type Boxed = Box<dyn Message>;

/// The sending side of every shard's inbox, shared by the shards and outside handles.
pub(crate) struct Mesh {
    inboxes: Vec<Inbox>,
    /// Shards that have not finished their own drain yet: a shard serves its inbox until
    /// this is zero, so that calls from shards still draining are answered.
    draining: AtomicUsize,
    /// Shards whose work other than followers is not done yet (see `proto::drain`).
    pub(crate) barrier: DrainBarrier,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("shards", &self.inboxes.len())
            .field("draining", &self.draining)
            .field("barrier", &self.barrier)
            .finish()
    }
}

struct Inbox {
    requests: Sender<Boxed>,
    replies: Sender<Boxed>,
    wake: StdUnixStream,
    wake_pending: AtomicBool,
    /// Shards waiting for room in `requests`.
    waiting: Mutex<Vec<usize>>,
}

/// The receiving side of one shard's inbox.
pub(crate) struct InboxRx {
    requests: Receiver<Boxed>,
    replies: Receiver<Boxed>,
    wake: OwnedFd,
}

/// Why a message could not be queued.
enum SendError {
    Full(Boxed),
    Stopped,
}

impl Mesh {
    /// Inboxes for `shards` shards, each queueing at most `capacity` requests.
    pub(crate) fn new(shards: usize, capacity: usize) -> std::io::Result<(Arc<Self>, Vec<InboxRx>)> {
        let mut inboxes = Vec::with_capacity(shards);
        let mut rxs = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (req_tx, req_rx) = crossbeam_channel::bounded(capacity.max(1));
            let (rep_tx, rep_rx) = crossbeam_channel::unbounded();
            let (wake, woken) = StdUnixStream::pair()?;
            wake.set_nonblocking(true)?;
            inboxes.push(Inbox {
                requests: req_tx,
                replies: rep_tx,
                wake,
                wake_pending: AtomicBool::new(false),
                waiting: Mutex::new(Vec::new()),
            });
            rxs.push(InboxRx {
                requests: req_rx,
                replies: rep_rx,
                wake: OwnedFd::from(woken),
            });
        }
        let mesh = Self {
            draining: AtomicUsize::new(shards),
            barrier: DrainBarrier::new(shards),
            inboxes,
        };
        Ok((Arc::new(mesh), rxs))
    }

    /// How many shards the mesh joins.
    pub(crate) fn shards(&self) -> usize {
        self.inboxes.len()
    }

    fn check(&self, shard: usize) -> Result<&Inbox, CallError> {
        self.inboxes.get(shard).ok_or(CallError::NoSuchShard {
            shard,
            shards: self.inboxes.len(),
        })
    }

    /// Queues a request for `shard` without waiting.
    fn try_request(&self, shard: usize, msg: Boxed) -> Result<(), SendError> {
        let inbox = &self.inboxes[shard];
        match inbox.requests.try_send(msg) {
            Ok(()) => {
                inbox.wake();
                Ok(())
            }
            Err(TrySendError::Full(msg)) => Err(SendError::Full(msg)),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
    }

    /// Queues a reply or notice for `shard` (dropped if it has stopped).
    fn notify(&self, shard: usize, msg: Boxed) {
        let inbox = &self.inboxes[shard];
        if inbox.replies.send(msg).is_ok() {
            inbox.wake();
        }
    }

    /// Marks this shard's drain as done; shards serve their inboxes until every shard's is.
    pub(crate) fn finish_drain(&self) {
        self.draining.fetch_sub(1, Ordering::AcqRel);
    }

    /// True while some shard is still draining (and may call others).
    pub(crate) fn any_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) > 0
    }

    /// Requests queued for `shard` now.
    pub(crate) fn queued(&self, shard: usize) -> usize {
        self.inboxes.get(shard).map_or(0, |i| i.requests.len())
    }
}

impl Inbox {
    /// Wakes the shard's reactor unless a wake-up is already on its way.
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A full socket buffer means wake-ups are pending already.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// One shard's side of the calls it makes: replies it awaits, and callers waiting for room.
#[derive(Default)]
pub(crate) struct Calls {
    pending: RefCell<Slab<Pending>>,
    /// Callers waiting for room in some shard's request queue.
    room: RefCell<Vec<Waker>>,
}

#[derive(Default)]
struct Pending {
    value: Option<Box<dyn Any + Send>>,
    waker: Option<Waker>,
}

impl Calls {
    /// Calls sent and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.borrow().len()
    }

    fn complete(&self, key: usize, value: Box<dyn Any + Send>) {
        if let Some(p) = self.pending.borrow_mut().get_mut(key) {
            p.value = Some(value);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }

    fn wake_room_waiters(&self) {
        let waiters = std::mem::take(&mut *self.room.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Removes a pending call's slot when its caller goes away (completed or cancelled).
struct PendingGuard<'a> {
    calls: &'a Calls,
    key: usize,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.calls.pending.borrow_mut().try_remove(self.key);
    }
}

/// A call from one shard to another: runs `f` on the target's state, replies to the origin.
struct Request<T, R: Send + 'static, F> {
    origin: usize,
    target: usize,
    key: usize,
    mesh: Arc<Mesh>,
    f: Option<F>,
    _types: PhantomData<fn(&T) -> R>,
}

impl<T, R: Send + 'static, F> Request<T, R, F> {
    fn reply(&self, result: Result<R, CallError>) {
        let reply = Reply {
            key: self.key,
            value: result,
        };
        self.mesh.notify(self.origin, Box::new(reply));
    }
}

impl<T, R, F> Message for Request<T, R, F>
where
    T: 'static,
    R: Send + 'static,
    F: FnOnce(&T) -> R + Send + 'static,
{
    fn run(mut self: Box<Self>, shard: &ShardCtx) {
        let Some(f) = self.f.take() else {
            return;
        };
        ShardStats::add(&shard.stats.calls_received, 1);
        let result = run_on_state(shard, f);
        self.reply(result);
    }
}

impl<T, R: Send + 'static, F> Drop for Request<T, R, F> {
    /// A request dropped unrun (its shard stopped) tells its caller.
    fn drop(&mut self) {
        if self.f.take().is_some() {
            self.reply(Err(CallError::ShardStopped(self.target)));
        }
    }
}

/// Runs `f` against this shard's state of type `T`; a panic is caught and reported.
fn run_on_state<T: 'static, R>(shard: &ShardCtx, f: impl FnOnce(&T) -> R) -> Result<R, CallError> {
    let index = shard.info.index;
    let state = shard.state::<T>().ok_or(CallError::NoState {
        shard: index,
        type_name: std::any::type_name::<T>(),
    })?;
    std::panic::catch_unwind(AssertUnwindSafe(|| f(&state))).map_err(|_| CallError::Panicked(index))
}

/// The result of a call (or `ShardStopped`, for one dropped unrun), on its way back to the
/// caller.
struct Reply<V> {
    key: usize,
    value: V,
}

impl<V: Send + 'static> Message for Reply<V> {
    fn run(self: Box<Self>, shard: &ShardCtx) {
        shard.calls.complete(self.key, Box::new(self.value));
    }
}

/// There is room in some shard's request queue again.
struct Room;

impl Message for Room {
    fn run(self: Box<Self>, shard: &ShardCtx) {
        shard.calls.wake_room_waiters();
    }
}

/// A call from a thread outside the engine: the result goes back over a channel.
struct Outside<T, R, F> {
    target: usize,
    f: Option<F>,
    reply: std::sync::mpsc::SyncSender<Result<R, CallError>>,
    _state: PhantomData<fn(&T)>,
}

impl<T, R, F> Message for Outside<T, R, F>
where
    T: 'static,
    R: Send + 'static,
    F: FnOnce(&T) -> R + Send + 'static,
{
    fn run(mut self: Box<Self>, shard: &ShardCtx) {
        if let Some(f) = self.f.take() {
            ShardStats::add(&shard.stats.calls_received, 1);
            let _ = self.reply.send(run_on_state(shard, f));
        }
    }
}

impl<T, R, F> Drop for Outside<T, R, F> {
    fn drop(&mut self) {
        if self.f.take().is_some() {
            let _ = self.reply.send(Err(CallError::ShardStopped(self.target)));
        }
    }
}

/// Runs `f` on shard `shard` against its state of type `T` (see
/// [`EngineBuilder::shard_state`](crate::EngineBuilder::shard_state)) and returns the result.
/// On the current shard it runs at once; otherwise the closure travels to the target's inbox
/// and the result comes back to this shard's. When the target's queue is full, the call waits
/// for room (back-pressure).
///
/// # Errors
///
/// [`CallError::ShardStopped`] once the target has stopped (never a hang),
/// [`CallError::NoSuchShard`], [`CallError::NoState`], [`CallError::Panicked`] (the target
/// carries on), or [`CallError::NotOnShard`] outside an engine's shard.
///
/// # Ordering
///
/// Calls from one task run on the target in the order they are made (each waits for its
/// reply). Calls made concurrently by several tasks may run in any order, and a call that
/// waited for room may be overtaken by a later one: a protocol that needs its commands to run
/// in order sends them from one task, or batches them into one call (as the kv server does).
///
/// # Cancel safety
///
/// Dropping the future after the request was sent does not recall it: it still runs on the
/// target, and its result is dropped.
pub async fn submit_to<T, R, F>(shard: usize, f: F) -> Result<R, CallError>
where
    T: 'static,
    R: Send + 'static,
    F: FnOnce(&T) -> R + Send + 'static,
{
    let ctx = ShardCtx::installed().ok_or(CallError::NotOnShard)?;
    let mesh = ctx.mesh.clone().ok_or(CallError::NotOnShard)?;
    mesh.check(shard)?;
    if shard == ctx.info.index {
        return run_on_state(&ctx, f);
    }
    ctx.lead_again();
    let key = ctx.calls.pending.borrow_mut().insert(Pending::default());
    let _guard = PendingGuard {
        calls: &ctx.calls,
        key,
    };
    let started = Instant::now();
    let mut msg: Option<Boxed> = Some(Box::new(Request::<T, R, F> {
        origin: ctx.info.index,
        target: shard,
        key,
        mesh: mesh.clone(),
        f: Some(f),
        _types: PhantomData,
    }));
    poll_fn(|cx| {
        let Some(m) = msg.take() else {
            return Poll::Ready(Ok(()));
        };
        let m = match mesh.try_request(shard, m) {
            Ok(()) => return Poll::Ready(Ok(())),
            Err(SendError::Stopped) => return Poll::Ready(Err(CallError::ShardStopped(shard))),
            Err(SendError::Full(m)) => m,
        };
        // Full: wait for a room notice. Listed as waiting before trying once more, so that
        // room made in between is not missed.
        ctx.calls.room.borrow_mut().push(cx.waker().clone());
        mesh.inboxes[shard]
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ctx.info.index);
        match mesh.try_request(shard, m) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(SendError::Full(m)) => {
                msg = Some(m);
                Poll::Pending
            }
            Err(SendError::Stopped) => Poll::Ready(Err(CallError::ShardStopped(shard))),
        }
    })
    .await?;
    ShardStats::add(&ctx.stats.calls_sent, 1);
    let value = poll_fn(|cx| {
        let mut pending = ctx.calls.pending.borrow_mut();
        let Some(p) = pending.get_mut(key) else {
            return Poll::Ready(None);
        };
        match p.value.take() {
            Some(v) => Poll::Ready(Some(v)),
            None => {
                p.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    SHARD_CALL.record_for(shard, started.elapsed());
    let Some(value) = value else {
        return Err(CallError::ShardStopped(shard));
    };
    // The reply is always this call's `Result<R, CallError>`: the key names this call.
    value
        .downcast::<Result<R, CallError>>()
        .map_or(Err(CallError::ShardStopped(shard)), |result| *result)
}

/// Runs `f` on every shard against its state of type `T`, all at once, and returns the
/// results by shard index.
///
/// # Errors
///
/// The first error of any shard's call, as [`submit_to`].
pub async fn invoke_on_all<T, R, F>(f: F) -> Result<Vec<R>, CallError>
where
    T: 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let ctx = ShardCtx::installed().ok_or(CallError::NotOnShard)?;
    let shards = ctx.mesh.as_ref().map_or(0, |m| m.shards());
    let f = Arc::new(f);
    let calls: Vec<_> = (0..shards)
        .map(|i| {
            let f = f.clone();
            let call = submit_to(i, move |t: &T| f(t));
            Box::pin(call)
        })
        .collect();
    // Poll them together: every request is sent before any reply is awaited.
    let mut calls: Vec<_> = calls.into_iter().map(Some).collect();
    let mut out: Vec<Option<Result<R, CallError>>> = (0..shards).map(|_| None).collect();
    poll_fn(|cx| {
        let mut done = true;
        for (slot, call) in out.iter_mut().zip(calls.iter_mut()) {
            if let Some(c) = call {
                match c.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        *slot = Some(r);
                        *call = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or(Err(CallError::ShardStopped(i))))
        .collect()
}

/// The shard that owns `key` among the current engine's shards, for state partitioned by key
/// (`submit_to(owner_of(&key), ..)`): a hash of the key modulo the shard count, the same on
/// every shard and thread of the process ([`ShardHandle::owner_of`] agrees). Not a stable
/// placement across builds (the hash is std's `DefaultHasher`). Outside an engine's shard,
/// where [`submit_to`] fails with [`CallError::NotOnShard`], it is 0.
pub fn owner_of<K: Hash + ?Sized>(key: &K) -> usize {
    let shards = ShardCtx::installed().map_or(1, |s| s.info.shards);
    owner_among(key, shards)
}

/// `key`'s shard among `shards`.
fn owner_among<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// Sends calls to an engine's shards from any thread: a signal or admin thread, say.
/// Cheap to clone; `Send` and `Sync`. Made by [`Engine::shards`](crate::Engine::shards).
#[derive(Debug, Clone)]
pub struct ShardHandle {
    mesh: Arc<Mesh>,
}

impl ShardHandle {
    pub(crate) fn new(mesh: Arc<Mesh>) -> Self {
        Self { mesh }
    }

    /// How many shards the engine runs.
    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// The shard that owns `key`: the same as [`owner_of`] on the engine's shards.
    pub fn owner_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        owner_among(key, self.shards())
    }

    /// Runs `f` on shard `shard` against its state of type `T` and waits (blocking this
    /// thread, never a shard's) for the result. A full queue blocks until there is room.
    /// Do not call it from a shard's thread: use [`submit_to`] there.
    ///
    /// # Errors
    ///
    /// As [`submit_to`]; [`CallError::ShardStopped`] once the engine has stopped.
    pub fn call<T, R, F>(&self, shard: usize, f: F) -> Result<R, CallError>
    where
        T: 'static,
        R: Send + 'static,
        F: FnOnce(&T) -> R + Send + 'static,
    {
        let inbox = self.mesh.check(shard)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let msg: Boxed = Box::new(Outside {
            target: shard,
            f: Some(f),
            reply: tx,
            _state: PhantomData,
        });
        // A blocking send: this is not a reactor thread.
        if inbox.requests.send(msg).is_err() {
            return Err(CallError::ShardStopped(shard));
        }
        inbox.wake();
        rx.recv().unwrap_or(Err(CallError::ShardStopped(shard)))
    }
}

/// Serves one shard's inbox until the shard closes it: runs every message, and tells shards
/// waiting for room that there is some.
pub(crate) async fn serve_inbox(ctx: Rc<ShardCtx>, mesh: Arc<Mesh>, rx: InboxRx) {
    let me = ctx.info.index;
    let mut woken: UnixStream = sys::fd::adopt(rx.wake);
    let mut buf = [0u8; 64];
    loop {
        mesh.inboxes[me].wake_pending.store(false, Ordering::Release);
        while let Ok(m) = rx.replies.try_recv() {
            m.run(&ctx);
        }
        let mut served = 0usize;
        while let Ok(m) = rx.requests.try_recv() {
            m.run(&ctx);
            served += 1;
            if served.is_multiple_of(64) {
                glommio::executor().yield_if_needed().await;
            }
        }
        if served > 0 {
            let waiting = std::mem::take(
                &mut *mesh.inboxes[me]
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for shard in dedup(waiting) {
                mesh.notify(shard, Box::new(Room));
            }
        }
        match woken.read(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}
