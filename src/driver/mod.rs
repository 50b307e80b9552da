//! The only layer that touches glommio, sockets and the clock.

pub(crate) mod answered;
pub(crate) mod connection;
pub(crate) mod connector;
pub(crate) mod digest;
pub(crate) mod engine;
pub(crate) mod handshake;
pub(crate) mod listener_stop;
pub(crate) mod mesh;
pub(crate) mod monitor;
pub(crate) mod pipeline;
pub(crate) mod port;
pub(crate) mod reservation;
pub(crate) mod shard;
pub(crate) mod shed;
pub(crate) mod tasks;
pub(crate) mod tls;
pub(crate) mod wall_clock;

use std::cell::{Cell, RefCell};

use crate::addr::Address;
use crate::config::RingFeatures;
use crate::proto::protocol::Factory;

/// Borrows a glommio socket's descriptor, for socket2's option calls.
pub(crate) use crate::sys::fd::borrow as borrow_fd;

/// What a caught panic said: its message when it was a string (as `panic!` makes), else a
/// placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Builds `factory`'s protocol for a connection with `peer`. A panic in the factory refuses
/// that connection (`None`, logged) instead of ending the shard.
pub(crate) fn build_protocol<F: Factory>(factory: &RefCell<F>, peer: &Address) -> Option<F::Protocol> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        factory.borrow_mut().build_protocol(peer)
    }))
    .unwrap_or_else(|payload| {
        tracing::error!(
            %peer,
            "the factory panicked building a protocol ({}): the connection is closed",
            panic_message(payload.as_ref())
        );
        None
    })
}

/// Counts a task in a shard counter for as long as the guard lives.
pub(crate) struct Counted<'a>(&'a Cell<usize>);

impl<'a> Counted<'a> {
    pub(crate) fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        Self(count)
    }

    /// The guard of a count already raised (before the task it guards started).
    pub(crate) fn adopt(count: &'a Cell<usize>) -> Self {
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
