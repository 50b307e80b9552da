//! Happy eyeballs (RFC 8305): `connect_tcp` to a name with IPv6 and IPv4 addresses races
//! them, IPv6 first with a 250 ms head start, so an address that does not answer costs a
//! quarter of a second, not the connect timeout. Prints which address won and how long the
//! connect took.
//!
//! ```sh
//! cargo run --release --example happy_eyeballs -- localhost:7000
//! ```

use std::time::{Duration, Instant};

use weft::{
    ConnectOptions, Cores, Destination, Engine, EngineConfig, Protocol, Transport, connect_tcp, factory_fn,
};

/// A connection that does nothing: the example only connects.
struct Idle;

impl Protocol for Idle {
    fn data_received(&mut self, _data: &[u8], _t: &Transport) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let dest: Destination = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("localhost:7000")
        .parse()?;
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::builder(config)
        .on_each_shard(move |_shard| {
            let (dest, tx) = (dest.clone(), tx.clone());
            async move {
                let options = ConnectOptions::default().with_timeout(Duration::from_secs(5));
                let started = Instant::now();
                let connector = connect_tcp(dest, factory_fn(|_peer| Some(Idle)), options);
                let line = match connector.connected().await {
                    Ok(t) => {
                        let line = format!(
                            "connected to {} after {} ms",
                            t.peer_addr(),
                            started.elapsed().as_millis()
                        );
                        t.lose_connection();
                        line
                    }
                    Err(e) => format!("failed after {} ms: {e}", started.elapsed().as_millis()),
                };
                connector.disconnect();
                let _ = tx.send(line);
            }
        })
        .start()?;
    engine.join()?;
    for line in rx.try_iter() {
        println!("{line}");
    }
    Ok(())
}
