//! The Transport: a protocol's handle on its connection (Twisted's `ITransport`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use crate::outbuf::OutBuf;
use crate::{Address, CloseReason};

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
    /// Reading is paused.
    paused: bool,
    /// The socket is closed.
    disconnected: bool,
    /// The driver is inside its poll, so it will see any change without a wake-up.
    polling: bool,
}

struct Inner {
    out: RefCell<OutBuf>,
    flags: Cell<Flags>,
    /// A close forced on the connection (abort, engine shutdown): the reason it will end with.
    forced: RefCell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
    /// The socket while it is open; -1 after.
    fd: Cell<RawFd>,
    local: Address,
    peer: Address,
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

impl Transport {
    pub(crate) fn new(fd: RawFd, local: Address, peer: Address) -> Self {
        Self {
            inner: Rc::new(Inner {
                out: RefCell::new(OutBuf::default()),
                flags: Cell::new(Flags::default()),
                forced: RefCell::new(None),
                waker: RefCell::new(None),
                fd: Cell::new(fd),
                local,
                peer,
            }),
        }
    }

    /// A transport with no socket, for testing protocols without I/O.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        let addr = Address::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        Self::new(-1, addr, addr)
    }

    /// Queues `data` for the peer. Dropped if the connection is closing for good (aborted,
    /// write side shut, or gone). Writes made after `lose_connection` are still sent.
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() || !self.writable() {
            return;
        }
        self.inner.out.borrow_mut().push(data);
        self.wake();
    }

    /// Queues several buffers, in order, as one write.
    pub fn write_vectored(&self, bufs: &[&[u8]]) {
        if !self.writable() {
            return;
        }
        {
            let mut out = self.inner.out.borrow_mut();
            for b in bufs {
                out.push(b);
            }
        }
        self.wake();
    }

    /// Flushes everything queued, then closes the connection. The protocol's
    /// `connection_lost` follows with [`CloseReason::LocalClose`] (or
    /// [`CloseReason::PeerEof`] when the peer had already closed its side).
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
    /// down as its window fills.
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

    /// The peer's address.
    pub fn peer_addr(&self) -> Address {
        self.inner.peer
    }

    /// Bytes queued and not yet accepted by the kernel.
    pub fn buffered(&self) -> usize {
        self.inner.out.borrow().len()
    }

    /// True until the connection starts closing (by either side) or is gone.
    pub fn is_connected(&self) -> bool {
        let f = self.inner.flags.get();
        !f.disconnected && !f.closing && self.inner.forced.borrow().is_none()
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
        // SAFETY: `fd` is the connection's open socket; the driver sets it to -1 before it
        // closes the socket, and both run on this one thread.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        f(socket2::SockRef::from(&fd))
    }

    fn writable(&self) -> bool {
        let f = self.inner.flags.get();
        !f.disconnected && !f.write_closing && self.inner.forced.borrow().is_none()
    }

    fn update(&self, change: impl FnOnce(&mut Flags)) {
        let mut f = self.inner.flags.get();
        change(&mut f);
        self.inner.flags.set(f);
        self.wake();
    }

    fn wake(&self) {
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

    /// The socket is closed: drop queued bytes and the waker, and forget the descriptor.
    pub(crate) fn mark_disconnected(&self) {
        let mut f = self.inner.flags.get();
        f.disconnected = true;
        f.polling = false;
        self.inner.flags.set(f);
        self.inner.fd.set(-1);
        self.inner.out.borrow_mut().clear();
        self.inner.waker.borrow_mut().take();
    }

    /// Wakes the driver from outside its poll (engine shutdown, timers).
    pub(crate) fn notify(&self) {
        self.wake();
    }
}
