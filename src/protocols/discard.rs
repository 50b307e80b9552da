//! Discard: reads and drops everything.

use crate::addr::Address;
use crate::proto::protocol::{FnFactory, Protocol, factory_fn};
use crate::proto::transport::Transport;

/// Reads and drops every byte; closes after the peer's EOF.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Discard {
    /// A factory that serves every peer with `Discard`.
    pub fn factory() -> FnFactory<impl FnMut(&Address) -> Option<Discard>> {
        factory_fn(|_| Some(Discard))
    }
}

impl Protocol for Discard {
    fn data_received(&mut self, _data: &[u8], _transport: &Transport) {}
}
