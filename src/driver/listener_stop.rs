//! Stopping one listener of a running engine (Twisted's `Port.stopListening`): how many
//! shards still accept on each listener, counted down by the shards and waited for by the
//! [`ListenerStop`] that [`EngineControl::stop_listening`](crate::EngineControl::stop_listening)
//! returns.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The engine's listeners as its handle and its shards share them: each one's address, and
/// how many shards still accept on it.
#[derive(Debug)]
pub(crate) struct Listeners {
    addrs: Vec<SocketAddr>,
    accepting: Mutex<Vec<Accepting>>,
    /// Notified whenever a listener's count reaches zero.
    stopped: Condvar,
}

/// One listener's shards still accepting, and the tasks that await its stop.
#[derive(Debug)]
struct Accepting {
    shards: usize,
    wakers: Vec<Waker>,
}

impl Listeners {
    /// The listeners bound at `addrs` (in listener order), each accepted on by `shards` shards.
    pub(crate) fn new(addrs: Vec<SocketAddr>, shards: usize) -> Arc<Self> {
        let accepting = addrs
            .iter()
            .map(|_| Accepting {
                shards,
                wakers: Vec::new(),
            })
            .collect();
        Arc::new(Self {
            addrs,
            accepting: Mutex::new(accepting),
            stopped: Condvar::new(),
        })
    }

    /// The bound addresses, in listener order.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Accepting>> {
        self.accepting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One shard no longer accepts on `listener`; true if it was the last.
    fn count_down(&self, listener: usize) -> bool {
        let mut accepting = self.lock();
        let Some(a) = accepting.get_mut(listener) else {
            return false;
        };
        a.shards = a.shards.saturating_sub(1);
        if a.shards > 0 {
            return false;
        }
        for w in a.wakers.drain(..) {
            w.wake();
        }
        self.stopped.notify_all();
        true
    }

    fn is_stopped(&self, listener: usize) -> bool {
        self.lock().get(listener).is_none_or(|a| a.shards == 0)
    }
}

/// A shard's side of [`Listeners`]: counts each listener down once, when the shard stops
/// accepting on it, and when dropped (the shard's listeners are cancelled, or it panicked)
/// every listener it has not counted down yet.
#[derive(Debug)]
pub(crate) struct ShardListening {
    listeners: Arc<Listeners>,
    /// By listener: true while this shard has not counted it down.
    accepting: Vec<bool>,
}

impl ShardListening {
    pub(crate) fn new(listeners: Arc<Listeners>) -> Self {
        let accepting = vec![true; listeners.addrs.len()];
        Self { listeners, accepting }
    }

    /// This shard no longer accepts on `listener`: its address if no shard does any more.
    pub(crate) fn stopped(&mut self, listener: usize) -> Option<SocketAddr> {
        let was = self.accepting.get_mut(listener).map(std::mem::take)?;
        (was && self.listeners.count_down(listener))
            .then(|| self.listeners.addrs.get(listener).copied())
            .flatten()
    }
}

impl Drop for ShardListening {
    fn drop(&mut self) {
        for (listener, accepting) in self.accepting.iter().enumerate() {
            if *accepting {
                self.listeners.count_down(listener);
            }
        }
    }
}

/// One listener's stop under way, from
/// [`EngineControl::stop_listening`](crate::EngineControl::stop_listening): what Twisted's
/// `Port.stopListening()` returns a `Deferred` for. It is done once every shard has served
/// the clients already queued on the listener, shut it down (new connects are refused) and
/// closed it.
///
/// Await it (from a shard's task, say), or [`wait`](Self::wait) for it from another thread.
/// Dropping it undoes nothing: the listener stops all the same.
#[derive(Debug)]
pub struct ListenerStop {
    listeners: Arc<Listeners>,
    listener: usize,
    addr: SocketAddr,
}

impl ListenerStop {
    /// The stop of `listener`, bound at `addr`.
    pub(crate) fn new(listeners: Arc<Listeners>, listener: usize, addr: SocketAddr) -> Self {
        Self {
            listeners,
            listener,
            addr,
        }
    }

    /// The index of the listener, in the order the listeners were added.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The listener's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// True once no shard accepts on the listener any more.
    pub fn is_done(&self) -> bool {
        self.listeners.is_stopped(self.listener)
    }

    /// Blocks this thread until no shard accepts on the listener, for at most `timeout`;
    /// true if done. A shard stops within about 200 ms of the command (the grace its accept
    /// in flight gets), once it gets to run. Do not call it on a shard's thread: that shard
    /// cannot stop while it blocks here, so the wait runs to its timeout; await the
    /// `ListenerStop` there instead.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut accepting = self.listeners.lock();
        loop {
            if accepting.get(self.listener).is_none_or(|a| a.shards == 0) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            accepting = match self.listeners.stopped.wait_timeout(accepting, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

impl Future for ListenerStop {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut accepting = self.listeners.lock();
        match accepting.get_mut(self.listener) {
            Some(a) if a.shards > 0 => {
                if !a.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    a.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(shards: usize) -> Arc<Listeners> {
        let addrs = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        Listeners::new(addrs, shards)
    }

    #[test]
    fn a_listener_is_stopped_once_every_shard_stopped_accepting_on_it() {
        let l = listeners(2);
        let stop = ListenerStop::new(l.clone(), 0, l.addrs()[0]);
        let (mut a, mut b) = (ShardListening::new(l.clone()), ShardListening::new(l.clone()));
        assert_eq!(a.stopped(0), None, "shard b still accepts");
        assert_eq!(a.stopped(0), None, "counted once per shard");
        assert!(!stop.is_done() && !stop.wait(Duration::from_millis(1)));
        assert_eq!(b.stopped(0), Some(l.addrs()[0]));
        assert!(stop.is_done() && stop.wait(Duration::ZERO));
        assert!(
            !ListenerStop::new(l.clone(), 1, l.addrs()[1]).is_done(),
            "the other listener is untouched"
        );
        assert_eq!(a.stopped(9), None, "no such listener");
    }

    #[test]
    fn a_shard_that_ends_counts_down_what_it_still_accepted_on() {
        let l = listeners(1);
        let mut shard = ShardListening::new(l.clone());
        assert!(shard.stopped(1).is_some());
        drop(shard);
        assert!(ListenerStop::new(l.clone(), 0, l.addrs()[0]).is_done());
        assert!(ListenerStop::new(l.clone(), 1, l.addrs()[1]).is_done());
    }

    #[test]
    fn a_waiting_thread_and_an_awaiting_task_are_woken() {
        let l = listeners(1);
        let stop = ListenerStop::new(l.clone(), 0, l.addrs()[0]);
        let waker = Arc::new(Flag::default());
        let mut awaited = ListenerStop::new(l.clone(), 0, l.addrs()[0]);
        let w = Waker::from(waker.clone());
        let cx = &mut Context::from_waker(&w);
        assert!(Pin::new(&mut awaited).poll(cx).is_pending());
        let shard = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(ShardListening::new(l));
        });
        assert!(stop.wait(Duration::from_secs(10)));
        shard.join().unwrap();
        assert!(waker.0.load(std::sync::atomic::Ordering::Relaxed));
        assert!(Pin::new(&mut awaited).poll(cx).is_ready());
    }

    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
