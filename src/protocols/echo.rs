//! Echo: every byte back to its sender.

use crate::addr::Address;
use crate::proto::protocol::{FnFactory, Protocol, factory_fn};
use crate::proto::transport::Transport;

/// Writes back every byte it receives. After the peer's EOF it flushes everything queued,
/// then closes, so no byte is lost (Twisted's plain echo drops the tail).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Echo {
    /// A factory that serves every peer with `Echo`.
    pub fn factory() -> FnFactory<impl FnMut(&Address) -> Option<Echo>> {
        factory_fn(|_| Some(Echo))
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        transport.write(data);
    }
}
