//! Relay: a TCP proxy to one upstream, with back-pressure end to end.
//!
//! Each accepted client gets its own upstream connection (made with [`connect_tcp`] on the
//! same shard). Each side's transport is registered as the producer of the other, so a slow
//! reader on either end pauses reading on the other end at the high-water mark: memory per
//! relayed connection stays bounded by the watermarks however fast the writer is. Half-closes
//! are passed on (EOF from one side becomes a write shutdown towards the other), and either
//! side ending closes the other after it has flushed.

use std::cell::RefCell;
use std::rc::Rc;

use crate::addr::Address;
use crate::driver::connector::{ClientFactory, Connector, connect_tcp};
use crate::driver::tasks as shard;
use crate::proto::client::{ConnectOptions, Destination};
use crate::proto::close::CloseReason;
use crate::proto::protocol::{Factory, FnFactory, Protocol, factory_fn};
use crate::proto::transport::Transport;

/// The client-facing half of a relayed connection.
#[derive(Debug)]
pub struct Relay {
    upstream: Destination,
    options: ConnectOptions,
    link: Rc<Link>,
    connector: Option<Connector>,
}

/// What both halves share: the upstream transport once connected.
#[derive(Debug, Default)]
struct Link {
    upstream: RefCell<Option<Transport>>,
}

impl Relay {
    /// A relay of one client connection to `upstream`.
    pub fn new(upstream: Destination, options: ConnectOptions) -> Self {
        Self {
            upstream,
            options,
            link: Rc::new(Link::default()),
            connector: None,
        }
    }

    /// A factory that relays every client to `upstream`.
    pub fn factory(upstream: Destination) -> FnFactory<impl FnMut(&Address) -> Option<Relay>> {
        factory_fn(move |_| Some(Relay::new(upstream.clone(), ConnectOptions::default())))
    }

    fn upstream(&self) -> Option<Transport> {
        self.link.upstream.borrow().clone()
    }
}

impl Protocol for Relay {
    fn connection_made(&mut self, client: &Transport) {
        // Nothing is read from the client until there is somewhere to put it.
        client.pause_reading();
        let factory = Upstream {
            client: client.clone(),
            link: self.link.clone(),
        };
        let connector = connect_tcp(self.upstream.clone(), factory, self.options.clone());
        self.connector = Some(connector.clone());
        let (client, link) = (client.clone(), self.link.clone());
        shard::spawn(async move {
            match connector.connected().await {
                Ok(up) => {
                    // Each side's output pauses the other side's reading.
                    up.register_producer(Box::new(client.clone()));
                    client.register_producer(Box::new(up.clone()));
                    *link.upstream.borrow_mut() = Some(up);
                    client.resume_reading();
                }
                Err(reason) => {
                    tracing::debug!(peer = %client.peer_addr(), "relay upstream failed: {reason}");
                    client.lose_connection();
                }
            }
        });
    }

    fn data_received(&mut self, data: &[u8], _client: &Transport) {
        if let Some(up) = self.upstream() {
            up.write(data);
        }
    }

    fn read_connection_lost(&mut self, client: &Transport) {
        match self.upstream() {
            Some(up) => up.lose_write_connection(),
            None => client.lose_connection(),
        }
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        if let Some(up) = self.upstream() {
            up.lose_connection();
        }
        if let Some(c) = self.connector.take() {
            // Still connecting: give up. Connected: the upstream closes as it flushes.
            let _ = c.stop_connecting();
        }
    }
}

/// Builds the upstream half.
struct Upstream {
    client: Transport,
    link: Rc<Link>,
}

impl Factory for Upstream {
    type Protocol = UpstreamSide;

    fn build_protocol(&mut self, _peer: &Address) -> Option<UpstreamSide> {
        Some(UpstreamSide {
            client: self.client.clone(),
            link: self.link.clone(),
        })
    }
}

/// The relay waits for the connection with [`Connector::connected`] instead.
impl ClientFactory for Upstream {}

/// The upstream-facing half of a relayed connection.
struct UpstreamSide {
    client: Transport,
    link: Rc<Link>,
}

impl Protocol for UpstreamSide {
    fn data_received(&mut self, data: &[u8], _up: &Transport) {
        self.client.write(data);
    }

    fn read_connection_lost(&mut self, _up: &Transport) {
        self.client.lose_write_connection();
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        self.link.upstream.borrow_mut().take();
        self.client.lose_connection();
    }
}
