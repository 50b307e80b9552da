//! Tasks a shard runs beside its connections, which its drain waits for and then cancels.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::panic_message;
use super::shard::ShardCtx;
use crate::config::RingFeatures;
use crate::proto::protocol::ShardInfo;
use crate::proto::transport::Transport;
use crate::stats::StatsSnapshot;

/// The tasks of one shard: how many run, and a way to cancel them all.
#[derive(Default)]
pub(crate) struct Tasks {
    /// Each running task's latest waker (so that a cancel can wake it), and whether it was
    /// aborted.
    running: RefCell<Slab<Running>>,
    cancelled: Cell<bool>,
    /// Woken when the last task ends.
    idle: RefCell<Option<Waker>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.running())
            .field("cancelled", &self.cancelled.get())
            .finish()
    }
}

/// One running task's entry in its shard's [`Tasks`].
#[derive(Default)]
struct Running {
    waker: Option<Waker>,
    aborted: bool,
    /// The connection the task serves (an `Answered`'s): while it follows the drain, so does
    /// the task.
    serves: Option<Transport>,
}

impl Tasks {
    /// Runs `future` on this thread's executor as one of these tasks, serving connection
    /// `serves` if it is given, and returns its key (for [`abort`](Self::abort)). After
    /// [`cancel`](Self::cancel) a new task is dropped unpolled.
    pub(crate) fn spawn(
        self: &Rc<Self>,
        future: Pin<Box<dyn Future<Output = ()>>>,
        serves: Option<Transport>,
    ) -> usize {
        if self.cancelled.get() {
            return usize::MAX;
        }
        let key = self.running.borrow_mut().insert(Running {
            serves,
            ..Running::default()
        });
        let tracked = Tracked {
            future,
            tasks: self.clone(),
            key,
        };
        glommio::spawn_local(tracked).detach();
        key
    }

    /// Ends task `key` at its next poll (it is woken now). The caller knows the task still
    /// runs: a key is reused once its task has ended.
    fn abort(&self, key: usize) {
        let waker = self.running.borrow_mut().get_mut(key).and_then(|r| {
            r.aborted = true;
            r.waker.take()
        });
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// How many tasks have not ended yet.
    pub(crate) fn running(&self) -> usize {
        self.running.borrow().len()
    }

    /// True while a task runs that does not serve a connection following the drain.
    pub(crate) fn leading(&self) -> bool {
        self.running
            .borrow()
            .iter()
            .any(|(_, r)| r.serves.as_ref().is_none_or(|t| !t.follows_drain()))
    }

    /// Resolves once no task runs.
    pub(crate) async fn idle(&self) {
        poll_fn(|cx| {
            if self.running() == 0 {
                Poll::Ready(())
            } else {
                *self.idle.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Ends every task at its next poll (it is woken now) and refuses new ones.
    pub(crate) fn cancel(&self) {
        self.cancelled.set(true);
        let wakers: Vec<Waker> = self
            .running
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, r)| r.waker.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }
}

/// A task's future, counted in its shard's [`Tasks`] until it ends or is dropped.
struct Tracked {
    future: Pin<Box<dyn Future<Output = ()>>>,
    tasks: Rc<Tasks>,
    key: usize,
}

impl Future for Tracked {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.tasks.cancelled.get() {
            return Poll::Ready(());
        }
        if let Some(r) = self.tasks.running.borrow_mut().get_mut(self.key) {
            if r.aborted {
                return Poll::Ready(());
            }
            if !r.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                r.waker = Some(cx.waker().clone());
            }
        }
        let future = self.future.as_mut();
        panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))).unwrap_or_else(|payload| {
            tracing::error!(
                "a task panicked ({}): it is ended, and the shard goes on",
                panic_message(payload.as_ref())
            );
            Poll::Ready(())
        })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut running = self.tasks.running.borrow_mut();
        running.try_remove(self.key);
        if running.is_empty()
            && let Some(w) = self.tasks.idle.borrow_mut().take()
        {
            w.wake();
        }
    }
}

/// The shard the calling code runs on, or `None` outside an engine's shard (on a bare glommio
/// executor, or on a thread with no executor).
pub fn current() -> Option<ShardInfo> {
    ShardCtx::installed().map(|s| s.info.clone())
}

/// Runs `future` as a task on the current shard, beside its connections, and returns a
/// handle that resolves to its output (dropping the handle detaches the task). The shard's
/// drain waits for the task up to the drain timeout, then cancels it: it is dropped at its
/// next poll and its handle resolves to [`Cancelled`]. During a drain it still starts; once
/// the shard has cancelled its tasks it is dropped unpolled. A task that panics is ended
/// there (the panic is logged, its handle resolves to [`Cancelled`]); the shard goes on.
///
/// # Panics
///
/// Outside a glommio executor (an engine shard, or a bare `LocalExecutor`).
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    spawn_task(future, None)
}

/// Runs `future` as a task of connection `t` (as [`spawn`]): its work is the connection's,
/// so it follows the drain while `t` does ([`Transport::follow_drain`]).
pub(crate) fn spawn_serving<T: 'static>(
    t: &Transport,
    future: impl Future<Output = T> + 'static,
) -> JoinHandle<T> {
    spawn_task(future, Some(t.clone()))
}

/// Spawns `future` on the current shard, as a task of connection `serves` if it is given; a
/// task that leads (serves no follower) holds a draining shard's part of the barrier again.
fn spawn_task<T: 'static>(
    future: impl Future<Output = T> + 'static,
    serves: Option<Transport>,
) -> JoinHandle<T> {
    let slot: Rc<RefCell<Joined<T>>> = Rc::new(RefCell::new(Joined::Running(None)));
    let guard = CancelGuard(slot.clone());
    let shard = ShardCtx::current();
    if serves.as_ref().is_none_or(|t| !t.follows_drain()) {
        shard.lead_again();
    }
    let tasks = shard.tasks.clone();
    let key = tasks.spawn(
        Box::pin(async move {
            let out = future.await;
            guard.finish(out);
        }),
        serves,
    );
    JoinHandle {
        slot,
        task: (tasks, key),
    }
}

/// A task ended without finishing: its shard's drain timed out and dropped it, or it
/// panicked (and the panic was logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the task was cancelled: its shard's drain timed out, or it panicked")]
pub struct Cancelled;

/// Resolves to a [`spawn`]ed task's output; dropping it detaches the task.
#[derive(Debug)]
pub struct JoinHandle<T> {
    slot: Rc<RefCell<Joined<T>>>,
    /// The task's shard tasks and its key there, for [`abort`](Self::abort).
    task: (Rc<Tasks>, usize),
}

/// Where a task's end is kept for its handle.
#[derive(Debug)]
enum Joined<T> {
    /// Still running; the handle's waker, if it waits.
    Running(Option<Waker>),
    Done(T),
    Cancelled,
    /// The handle took the outcome.
    Taken,
}

impl<T> Joined<T> {
    fn end(&mut self, outcome: Self) {
        if let Self::Running(waker) = std::mem::replace(self, outcome)
            && let Some(w) = waker
        {
            w.wake();
        }
    }
}

/// Marks the task cancelled if it is dropped before it finished.
struct CancelGuard<T>(Rc<RefCell<Joined<T>>>);

impl<T> CancelGuard<T> {
    fn finish(self, out: T) {
        self.0.borrow_mut().end(Joined::Done(out));
    }
}

impl<T> Drop for CancelGuard<T> {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        if matches!(*slot, Joined::Running(_)) {
            slot.end(Joined::Cancelled);
        }
    }
}

impl<T> JoinHandle<T> {
    /// Lets the task run on without waiting for it (the same as dropping the handle).
    pub fn detach(self) {}

    /// Ends the task: it does not run again, what it holds is dropped at its shard's next
    /// turn, and this handle resolves to [`Cancelled`]; a task that has ended is left as it
    /// is. The cancel of Twisted's `DelayedCall`, for a task that sleeps and then acts: a
    /// protocol keeps the handle and aborts it in `connection_lost`, so that a timer of a
    /// connection that is gone does not hold up a drain.
    pub fn abort(&self) {
        let mut slot = self.slot.borrow_mut();
        if matches!(*slot, Joined::Running(_)) {
            let (tasks, key) = &self.task;
            tasks.abort(*key);
            slot.end(Joined::Cancelled);
        }
    }

    /// True once the task has ended (finished, cancelled or aborted).
    pub fn is_finished(&self) -> bool {
        !matches!(*self.slot.borrow(), Joined::Running(_))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        match std::mem::replace(&mut *slot, Joined::Taken) {
            Joined::Running(_) => {
                *slot = Joined::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
            Joined::Done(out) => Poll::Ready(Ok(out)),
            Joined::Cancelled | Joined::Taken => Poll::Ready(Err(Cancelled)),
        }
    }
}

/// Waits `duration` without blocking the shard: other connections and tasks run meanwhile.
///
/// # Panics
///
/// Outside a glommio executor.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// The output of `future`, or [`Elapsed`] when `duration` passes first; the future is then
/// dropped. What the future started elsewhere goes on: a connection made for it by
/// [`connect_tcp`](crate::connect_tcp) stays open unless its [`Connector`](crate::Connector)
/// is held by [`abort_on_drop`](crate::Connector::abort_on_drop).
///
/// ```no_run
/// # async fn call(upstream: weft::Address) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use weft::{ConnectOptions, connect_tcp, factory_fn, protocols::Discard, shard};
///
/// // Connected within 2 s, or the attempt (or the connection) goes with the future.
/// let conn = connect_tcp(upstream, factory_fn(|_| Some(Discard)), ConnectOptions::default())
///     .abort_on_drop();
/// let transport = shard::timeout(Duration::from_secs(2), conn.connected()).await??;
/// transport.write(b"hello");
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// Outside a glommio executor.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut timer = std::pin::pin!(glommio::timer::Timer::new(duration));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        timer.as_mut().poll(cx).map(|_| Err(Elapsed(duration)))
    })
    .await
}

/// A [`timeout`] passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no result within {0:?}")]
pub struct Elapsed(pub Duration);

/// Lets the shard's other connections and tasks run if this task has run for long, then
/// continues: call it in long loops.
///
/// # Panics
///
/// Outside a glommio executor.
pub async fn yield_now() {
    glommio::executor().yield_if_needed().await;
}

/// This shard's service state of type `T` (see
/// [`EngineBuilder::shard_state`](crate::EngineBuilder::shard_state)): no lock, no copy.
/// `None` outside an engine's shard or when no state of that type was given.
pub fn state<T: 'static>() -> Option<Rc<T>> {
    ShardCtx::installed()?.state::<T>()
}

/// The io_uring set-up features the current shard's ring got: those its
/// [`ReactorConfig::ring`](crate::ReactorConfig::ring) asked for that the kernel has. `None`
/// outside an engine's shard.
pub fn ring_features() -> Option<RingFeatures> {
    ShardCtx::installed()?;
    Some(glommio::executor().ring_setup().into())
}

/// True once the current shard's drain has begun (a shutdown or handoff).
pub fn is_draining() -> bool {
    ShardCtx::installed().is_some_and(|s| s.draining.get())
}

/// Resolves when the current shard's drain begins (at once if it has): a task waits on it
/// to finish its work and end, so that the drain does not have to wait for its timeout.
/// Outside an engine's shard it never resolves.
pub async fn drain_started() {
    let mut drain = DrainWait::new();
    poll_fn(|cx| drain.poll(cx)).await;
}

/// Runs `future` until the current shard's drain begins: `Some` of its output if it finishes
/// first, `None` once the drain has begun (at once if it has; `future` is then dropped).
/// For the loop of a task that should end with the drain instead of holding it up until its
/// timeout:
///
/// ```no_run
/// # async fn ticker() {
/// use std::time::Duration;
/// use weft::shard;
///
/// let mut every = shard::interval(Duration::from_secs(1));
/// while shard::until_drain(every.tick()).await.is_some() {
///     println!("{} connections", shard::counters().active);
/// }
/// # }
/// ```
///
/// Outside an engine's shard the drain never begins: it is `Some` of the output.
pub async fn until_drain<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut drain = DrainWait::new();
    poll_fn(|cx| {
        if drain.poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// A wait for the current shard's drain: its slot among the shard's drain waiters, taken at
/// the first poll that has to wait and given back when dropped, so that waits that end
/// otherwise (an `until_drain` whose future won) leave nothing behind.
struct DrainWait {
    shard: Option<Rc<ShardCtx>>,
    slot: Option<usize>,
}

impl DrainWait {
    fn new() -> Self {
        Self {
            shard: ShardCtx::installed(),
            slot: None,
        }
    }

    /// Ready once the drain has begun; never outside an engine's shard.
    fn poll(&mut self, cx: &Context<'_>) -> Poll<()> {
        let Some(shard) = &self.shard else {
            return Poll::Pending;
        };
        if shard.draining.get() {
            return Poll::Ready(());
        }
        let mut waiters = shard.drain_waiters.borrow_mut();
        match self.slot.and_then(|k| waiters.get_mut(k)) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => self.slot = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let (Some(shard), Some(k)) = (&self.shard, self.slot)
            && !shard.draining.get()
        {
            shard.drain_waiters.borrow_mut().try_remove(k);
        }
    }
}

/// The counters of the current shard (or of this executor's client connections, on a bare
/// executor) now.
///
/// # Panics
///
/// Outside a glommio executor.
pub fn counters() -> StatsSnapshot {
    ShardCtx::current().snapshot()
}

/// Ticks every `period` on the current shard, the first tick one period from now (see
/// [`Interval::tick`]). A protocol may run as many as it likes, each in its own task.
pub fn interval(period: Duration) -> Interval {
    let period = period.max(Duration::from_micros(1));
    Interval {
        period,
        next: Instant::now() + period,
    }
}

/// A periodic timer made by [`interval`].
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    next: Instant,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time. Ticks missed while the task
    /// was busy are skipped, not bunched: the next one is the first scheduled in the future.
    ///
    /// # Panics
    ///
    /// Outside a glommio executor.
    pub async fn tick(&mut self) -> Instant {
        let now = Instant::now();
        if self.next > now {
            sleep(self.next - now).await;
        }
        let at = self.next;
        let late = Instant::now().saturating_duration_since(self.next);
        let periods = late.as_nanos() / self.period.as_nanos() + 1;
        self.next += self.period * u32::try_from(periods).unwrap_or(u32::MAX);
        at
    }
}
