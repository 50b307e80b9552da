//! Calls matched with their replies in order, without I/O: the bookkeeping of a pipelined
//! client ([`Pipeline`](crate::client::Pipeline), whose glommio half is
//! `driver::pipeline`), and why a call fails.
//!
//! A call is first admitted: it counts against the bound while it waits for a connection to
//! be written to. Once its request is written it is sent, and in line: the next reply that no
//! earlier call claims is its. A call given up on after it was sent (timed out, its future
//! dropped) stays in line, abandoned, until its reply comes and is dropped, so that the replies
//! after it still reach their own calls; it counts against the bound until then, because its
//! request is still on the connection. When the connection ends, every call in line fails.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

use crate::proto::client::ConnectError;
use crate::proto::close::CloseReason;

/// Why a [`Pipeline::call`](crate::client::Pipeline::call) got no reply. Each says what to do;
/// [`label`](Self::label) names it for logs and counters.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The bound on calls in flight or waiting for a connection
    /// ([`PipelineOptions::max_calls`](crate::client::PipelineOptions::max_calls)) is
    /// reached: refused at once, never queued without bound.
    #[error(
        "{limit} calls are already in flight or waiting: the upstream answers slower than the calls \
         come (shed this one, e.g. answer 503, or raise max_calls)"
    )]
    Overloaded {
        /// The bound.
        limit: usize,
    },
    /// The connection attempt this call waited for failed.
    #[error("cannot connect to the upstream: {0}")]
    ConnectFailed(ConnectError),
    /// The upstream is down and the reconnect policy waits out its back-off before the next
    /// attempt: the call is refused at once instead of being held for the delay.
    #[error(
        "the upstream is down ({0}) and the next connection attempt waits for its back-off: answer \
         the call with an error, or call again later"
    )]
    Reconnecting(Outage),
    /// The connection ended before the reply came: every call in flight on it fails so. The
    /// request may or may not have been carried out.
    #[error(
        "the connection to the upstream ended before the reply ({0}); the request may have been \
         carried out: call again only if it is safe to repeat"
    )]
    ConnectionLost(CloseReason),
    /// A reply did not decode (or came with no call waiting for it): the connection was reset,
    /// since the replies after it cannot be matched, and every call in flight on it failed so.
    #[error("the upstream sent a reply that cannot be used ({0}): the connection was reset")]
    BadReply(String),
    /// The encoder refused the request; nothing was sent.
    #[error("the request cannot be encoded: {0}")]
    Encode(String),
    /// No reply within the call timeout
    /// ([`PipelineOptions::call_timeout`](crate::client::PipelineOptions::call_timeout)); the
    /// reply, if it comes, is dropped.
    #[error("no reply within {0:?} (the upstream is slow or stuck; raise call_timeout if it is only slow)")]
    TimedOut(Duration),
    /// The pipeline was closed ([`Pipeline::close`](crate::client::Pipeline::close)): it
    /// takes no more calls.
    #[error("the pipeline is closed and takes no more calls")]
    Closed,
}

impl CallError {
    /// A short stable label: `overloaded`, `connect_failed`, `reconnecting`,
    /// `connection_lost`, `bad_reply`, `encode`, `timed_out` or `closed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "overloaded",
            Self::ConnectFailed(_) => "connect_failed",
            Self::Reconnecting(_) => "reconnecting",
            Self::ConnectionLost(_) => "connection_lost",
            Self::BadReply(_) => "bad_reply",
            Self::Encode(_) => "encode",
            Self::TimedOut(_) => "timed_out",
            Self::Closed => "closed",
        }
    }
}

/// How the upstream went down, for [`CallError::Reconnecting`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Outage {
    /// The last connection attempt failed.
    #[error("{0}")]
    ConnectFailed(ConnectError),
    /// The connection was lost, and no attempt has failed since.
    #[error("connection lost: {0}")]
    Lost(CloseReason),
}

/// A sent call's place in its [`CallQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallId(usize);

/// A reply came while no call was in line for it: the peer does not answer one reply per
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsolicited;

/// What became of one sent call.
#[derive(Debug)]
enum Call<R> {
    /// In line for its reply; the waker of the task that awaits it.
    Sent(Option<Waker>),
    /// Its reply (or its failure) waits to be taken.
    Answered(Result<R, CallError>),
    /// Given up on while in line: its reply is dropped when it comes.
    Abandoned,
}

/// The calls of one pipelined client, in the order their requests were written.
#[derive(Debug)]
pub(crate) struct CallQueue<R> {
    calls: Slab<Call<R>>,
    /// The calls sent and not answered, oldest first (`Sent` or `Abandoned`).
    line: VecDeque<usize>,
    /// Calls admitted and not sent yet.
    waiting: usize,
    limit: usize,
}

impl<R> CallQueue<R> {
    /// An empty queue that admits at most `limit` calls at once.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            calls: Slab::new(),
            line: VecDeque::new(),
            waiting: 0,
            limit,
        }
    }

    /// Calls that count against the bound: those waiting to be sent, and those in line
    /// (abandoned ones included).
    pub(crate) fn count(&self) -> usize {
        self.waiting + self.line.len()
    }

    /// True when no call waits to be sent or for its reply.
    pub(crate) fn is_idle(&self) -> bool {
        self.count() == 0
    }

    /// True when calls are in line but nobody awaits any of them: every one was abandoned
    /// (timed out), and none waits to be sent. Their replies would go nowhere.
    pub(crate) fn only_abandoned(&self) -> bool {
        self.waiting == 0
            && !self.line.is_empty()
            && self
                .line
                .iter()
                .all(|&key| matches!(self.calls.get(key), Some(Call::Abandoned)))
    }

    /// Admits a new call, which waits to be sent.
    ///
    /// # Errors
    ///
    /// [`CallError::Overloaded`] at the bound.
    pub(crate) fn admit(&mut self) -> Result<(), CallError> {
        if self.count() >= self.limit {
            return Err(CallError::Overloaded { limit: self.limit });
        }
        self.waiting += 1;
        Ok(())
    }

    /// An admitted call ended before it was sent.
    pub(crate) fn withdraw(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// An admitted call's request was written: it takes its place in line.
    pub(crate) fn sent(&mut self) -> CallId {
        self.withdraw();
        let key = self.calls.insert(Call::Sent(None));
        self.line.push_back(key);
        CallId(key)
    }

    /// A reply came: it is the oldest call's in line. Returns the waker of the task that
    /// awaits it (none when that call was abandoned: the reply is dropped), to wake once no
    /// borrow is held.
    ///
    /// # Errors
    ///
    /// [`Unsolicited`] when no call is in line.
    pub(crate) fn reply(&mut self, reply: R) -> Result<Option<Waker>, Unsolicited> {
        let key = self.line.pop_front().ok_or(Unsolicited)?;
        Ok(self.answer(key, Ok(reply)))
    }

    /// The connection ended: every call in line fails with `error` (the abandoned ones are
    /// dropped). Returns the wakers to wake.
    pub(crate) fn fail_sent(&mut self, error: &CallError) -> Vec<Waker> {
        let line = std::mem::take(&mut self.line);
        line.into_iter()
            .filter_map(|key| self.answer(key, Err(error.clone())))
            .collect()
    }

    /// Gives the call at `key`, just taken out of line, its outcome.
    fn answer(&mut self, key: usize, outcome: Result<R, CallError>) -> Option<Waker> {
        match self.calls.get_mut(key) {
            Some(call @ Call::Sent(_)) => match std::mem::replace(call, Call::Answered(outcome)) {
                Call::Sent(waker) => waker,
                Call::Answered(_) | Call::Abandoned => None,
            },
            Some(Call::Abandoned) => {
                self.calls.remove(key);
                None
            }
            Some(Call::Answered(_)) | None => None,
        }
    }

    /// The call's reply once it came, its failure once the connection ended; until then
    /// `Pending`, with `cx`'s task woken when either happens.
    pub(crate) fn poll_reply(&mut self, id: CallId, cx: &Context<'_>) -> Poll<Result<R, CallError>> {
        match self.calls.get_mut(id.0) {
            Some(Call::Sent(waker)) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(Call::Answered(_)) => match self.calls.remove(id.0) {
                Call::Answered(outcome) => Poll::Ready(outcome),
                Call::Sent(_) | Call::Abandoned => Poll::Pending,
            },
            Some(Call::Abandoned) | None => Poll::Pending,
        }
    }

    /// The call's future was dropped (a timeout gave up on it). In line, it stays there so
    /// that its reply is dropped; answered, its outcome is dropped now.
    pub(crate) fn abandon(&mut self, id: CallId) {
        match self.calls.get_mut(id.0) {
            Some(call @ Call::Sent(_)) => *call = Call::Abandoned,
            Some(Call::Answered(_)) => {
                self.calls.remove(id.0);
            }
            Some(Call::Abandoned) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sent(q: &mut CallQueue<&'static str>) -> CallId {
        q.admit().unwrap();
        q.sent()
    }

    fn poll(q: &mut CallQueue<&'static str>, id: CallId) -> Poll<Result<&'static str, String>> {
        let cx = Context::from_waker(Waker::noop());
        q.poll_reply(id, &cx).map(|r| r.map_err(|e| e.label().to_owned()))
    }

    #[test]
    fn replies_go_to_the_calls_in_the_order_they_were_sent() {
        let mut q = CallQueue::new(8);
        let (a, b, c) = (sent(&mut q), sent(&mut q), sent(&mut q));
        assert_eq!(q.count(), 3);
        assert_eq!(poll(&mut q, a), Poll::Pending);
        q.reply("one").unwrap();
        q.reply("two").unwrap();
        // Taken in any order: each has its own.
        assert_eq!(poll(&mut q, b), Poll::Ready(Ok("two")));
        assert_eq!(poll(&mut q, a), Poll::Ready(Ok("one")));
        assert_eq!(q.count(), 1);
        q.reply("three").unwrap();
        assert_eq!(poll(&mut q, c), Poll::Ready(Ok("three")));
        assert!(q.is_idle());
        assert!(matches!(q.reply("stray"), Err(Unsolicited)));
    }

    #[test]
    fn the_awaiting_task_is_woken_by_its_reply() {
        let mut q = CallQueue::new(8);
        let a = sent(&mut q);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(q.poll_reply(a, &Context::from_waker(&waker)).is_pending());
        let woken = q.reply("r").unwrap();
        woken.expect("a waker").wake();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_abandoned_calls_await_nobody() {
        let mut q = CallQueue::<&str>::new(4);
        assert!(!q.only_abandoned(), "an empty line");
        q.admit().unwrap();
        let a = q.sent();
        q.admit().unwrap();
        let b = q.sent();
        q.abandon(a);
        assert!(!q.only_abandoned(), "b is awaited");
        q.abandon(b);
        assert!(q.only_abandoned());
        q.admit().unwrap();
        assert!(!q.only_abandoned(), "a call waits to be sent");
    }

    #[test]
    fn an_abandoned_call_keeps_its_place_and_its_reply_is_dropped() {
        let mut q = CallQueue::new(2);
        let (a, b) = (sent(&mut q), sent(&mut q));
        q.abandon(a);
        // Still on the connection: it counts against the bound.
        assert_eq!(q.count(), 2);
        assert!(matches!(q.admit(), Err(CallError::Overloaded { limit: 2 })));
        assert!(q.reply("a's").unwrap().is_none(), "abandoned: nobody to wake");
        q.reply("b's").unwrap();
        assert_eq!(poll(&mut q, b), Poll::Ready(Ok("b's")));
        assert!(q.is_idle());
        assert!(q.calls.is_empty(), "nothing left behind");
        // Abandoned after its reply came: the reply is dropped at once.
        let c = sent(&mut q);
        q.reply("c's").unwrap();
        q.abandon(c);
        assert!(q.calls.is_empty());
    }

    #[test]
    fn the_bound_counts_waiting_and_sent_calls() {
        let mut q: CallQueue<&str> = CallQueue::new(2);
        q.admit().unwrap();
        q.admit().unwrap();
        let e = q.admit().unwrap_err();
        assert_eq!(e.label(), "overloaded");
        assert!(e.to_string().contains("raise max_calls"), "{e}");
        q.withdraw();
        q.admit().unwrap();
        let a = q.sent();
        assert_eq!(q.count(), 2, "sent, it still counts");
        q.reply("x").unwrap();
        assert_eq!(q.count(), 1, "answered, it no longer does");
        assert_eq!(poll(&mut q, a), Poll::Ready(Ok("x")));
    }

    #[test]
    fn a_lost_connection_fails_every_call_in_line() {
        let mut q = CallQueue::new(8);
        let (a, b, c) = (sent(&mut q), sent(&mut q), sent(&mut q));
        q.abandon(b);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(q.poll_reply(a, &Context::from_waker(&waker)).is_pending());
        q.admit().unwrap();
        let woken = q.fail_sent(&CallError::ConnectionLost(CloseReason::Reset));
        assert_eq!(woken.len(), 1, "c was never polled: no waker");
        assert_eq!(q.count(), 1, "the waiting call is not in line");
        let lost = Poll::Ready(Err("connection_lost".to_owned()));
        assert_eq!(poll(&mut q, a), lost);
        assert_eq!(poll(&mut q, c), lost);
        assert!(q.calls.is_empty(), "the abandoned call is gone too");
        // The next connection's replies go to the calls sent on it.
        let d = q.sent();
        q.reply("d's").unwrap();
        assert_eq!(poll(&mut q, d), Poll::Ready(Ok("d's")));
    }

    #[test]
    fn errors_say_what_to_do() {
        let lost = CallError::ConnectionLost(CloseReason::PeerEof);
        assert!(
            lost.to_string().contains("only if it is safe to repeat"),
            "{lost}"
        );
        let down = CallError::Reconnecting(Outage::ConnectFailed(ConnectError::Cancelled));
        assert!(down.to_string().contains("back-off"), "{down}");
        assert!(down.to_string().contains("cancelled"), "{down}");
        let slow = CallError::TimedOut(Duration::from_millis(50));
        assert!(slow.to_string().contains("50ms"), "{slow}");
        assert_eq!(CallError::Closed.label(), "closed");
    }
}
