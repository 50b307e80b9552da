//! One engine, two listeners, two protocols: a TCP relay to an upstream on one port (with
//! back-pressure both ways), and on another a `whoami` port that requires a PROXY protocol
//! header from the balancer on loopback, all on the same shards.
//!
//! ```sh
//! cargo run --release --example relay -- 127.0.0.1:7000 127.0.0.1:6379 127.0.0.1:7002
//! ```

use std::net::SocketAddr;

use weft::protocols::{Relay, Whoami};
use weft::proxy::{Cidr, ProxyConfig};
use weft::{Destination, EngineConfig, ListenerConfig, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7000").parse()?;
    let upstream: Destination = args.next().as_deref().unwrap_or("127.0.0.1:6379").parse()?;
    let whoami: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7002").parse()?;
    let balancers = ProxyConfig::trusting(Cidr::parse_list("127.0.0.0/8,::1")?);
    Service::new(EngineConfig::default())
        .name("relay")
        .listen(listen, move |_shard| Relay::factory(upstream.clone()))
        .listen(ListenerConfig::new(whoami).proxy(balancers), |_shard| {
            Whoami::factory()
        })
        .run()?;
    Ok(())
}
