//! Whoami: tells each client the address it is seen from, then closes.

use crate::addr::Address;
use crate::proto::protocol::{FnFactory, Protocol, factory_fn};
use crate::proto::transport::Transport;

/// On connect, writes the peer address the engine sees (`203.0.113.7:51234`, `[::1]:40000`)
/// and a newline, then closes. Behind a PROXY-protocol balancer that is the client the
/// balancer names, so tests and operators can check what it forwards. Input is ignored.
#[derive(Debug, Default, Clone, Copy)]
pub struct Whoami;

impl Whoami {
    /// A factory that serves every peer with `Whoami`.
    pub fn factory() -> FnFactory<impl FnMut(&Address) -> Option<Whoami>> {
        factory_fn(|_| Some(Whoami))
    }

    /// The line written to a peer at `peer`.
    pub fn line(peer: Address) -> String {
        format!("{peer}\n")
    }
}

impl Protocol for Whoami {
    fn connection_made(&mut self, transport: &Transport) {
        transport.write(Self::line(transport.peer_addr()).as_bytes());
        transport.lose_connection();
    }

    fn data_received(&mut self, _data: &[u8], _transport: &Transport) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(Whoami::line("192.0.2.1:80".parse().unwrap()), "192.0.2.1:80\n");
        assert_eq!(
            Whoami::line("[2001:db8::1]:9".parse().unwrap()),
            "[2001:db8::1]:9\n"
        );
        let t = Transport::detached();
        let mut w = Whoami;
        w.connection_made(&t);
        assert_eq!(t.buffered(), "127.0.0.1:0\n".len());
        assert!(!t.is_connected(), "closes after the line");
    }
}
