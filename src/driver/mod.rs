//! The only layer that touches glommio, sockets and the clock.

pub(crate) mod connection;
pub(crate) mod connector;
pub(crate) mod engine;
pub(crate) mod handshake;
pub(crate) mod mesh;
pub(crate) mod monitor;
pub(crate) mod port;
pub(crate) mod reservation;
pub(crate) mod shard;
pub(crate) mod tasks;
pub(crate) mod tls;

use std::cell::Cell;

use crate::config::RingFeatures;

/// Borrows a glommio socket's descriptor, for socket2's option calls.
pub(crate) use crate::sys::fd::borrow as borrow_fd;

/// Counts a task in a shard counter for as long as the guard lives.
pub(crate) struct Counted<'a>(&'a Cell<usize>);

impl<'a> Counted<'a> {
    pub(crate) fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl From<RingFeatures> for glommio::RingSetup {
    fn from(f: RingFeatures) -> Self {
        Self {
            coop_taskrun: f.coop_taskrun,
            single_issuer: f.single_issuer,
            defer_taskrun: f.defer_taskrun,
            registered_fd: f.registered_fd,
        }
    }
}

impl From<glommio::RingSetup> for RingFeatures {
    fn from(s: glommio::RingSetup) -> Self {
        Self {
            coop_taskrun: s.coop_taskrun,
            single_issuer: s.single_issuer,
            defer_taskrun: s.defer_taskrun,
            registered_fd: s.registered_fd,
        }
    }
}
