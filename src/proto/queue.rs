//! A queue between code on one shard: callbacks push, one task pops in order.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A first-in first-out queue on one shard, for handing work from callbacks (which cannot
/// wait) to one task (which can): for example a connection's requests, run one after the
/// other in arrival order by a task of its own. Cheap to clone; every clone is the same
/// queue. Unbounded: the pushing side bounds it (a protocol pauses reading above a count).
#[derive(Debug)]
pub struct Queue<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    waiter: Option<Waker>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// An empty, open queue.
    pub fn new() -> Self {
        Self {
            inner: Rc::new(RefCell::new(Inner {
                items: VecDeque::new(),
                closed: false,
                waiter: None,
            })),
        }
    }

    /// Adds `item` at the back and wakes the task waiting in [`pop`](Self::pop). On a closed
    /// queue the item is handed back.
    ///
    /// # Errors
    ///
    /// The item, when the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let waiter = {
            let mut inner = self.inner.borrow_mut();
            if inner.closed {
                return Err(item);
            }
            inner.items.push_back(item);
            inner.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
        Ok(())
    }

    /// Takes the front item, waiting for one; `None` once the queue is closed and empty.
    /// Meant for one task: a second task popping at once takes the wake-ups of the first.
    pub async fn pop(&self) -> Option<T> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// [`pop`](Self::pop) for a hand-written future: the front item, `None` once the queue
    /// is closed and empty, or `Pending` with `cx`'s task woken by the next push or close.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = self.inner.borrow_mut();
        match inner.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if inner.closed => Poll::Ready(None),
            None => {
                inner.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Refuses new items; [`pop`](Self::pop) still returns those queued, then `None`.
    pub fn close(&self) {
        let waiter = {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            inner.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.borrow().closed
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.inner.borrow().items.len()
    }

    /// True when no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn pops_in_order_waits_when_empty_and_ends_after_close() {
        let q = Queue::new();
        let mut cx = Context::from_waker(Waker::noop());
        q.push(1).unwrap();
        q.push(2).unwrap();
        assert_eq!(pin!(q.pop()).poll(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(pin!(q.pop()).poll(&mut cx), Poll::Ready(Some(2)));
        let mut waiting = Box::pin(q.pop());
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Pending);
        q.push(3).unwrap();
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(Some(3)));
        q.push(4).unwrap();
        assert!(!q.is_closed());
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.push(5), Err(5));
        assert_eq!(pin!(q.pop()).poll(&mut cx), Poll::Ready(Some(4)));
        assert_eq!(pin!(q.pop()).poll(&mut cx), Poll::Ready(None));
    }
}
