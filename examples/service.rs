//! A custom line protocol with weft's whole production lifecycle: SIGINT/SIGTERM drain, a
//! health check that fails first, Prometheus metrics and zero-downtime handoff.
//!
//! ```sh
//! cargo run --release --example service -- 127.0.0.1:7000 127.0.0.1:7001
//! printf 'hello\n' | nc -q1 127.0.0.1 7000     # HELLO
//! curl 127.0.0.1:7001/health                     # serving
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use weft::{EngineConfig, Protocol, Service, Transport, factory_fn};

/// Answers every line with the line upper-cased; keeps a partial line until its end arrives.
#[derive(Default)]
struct Shout {
    line: Vec<u8>,
}

impl Protocol for Shout {
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        for &b in data {
            self.line.push(b.to_ascii_uppercase());
            if b == b'\n' {
                t.write(&self.line);
                self.line.clear();
            }
        }
    }

    fn drain_requested(&mut self, t: &Transport) {
        // Shutting down: close once the answers written so far are sent (a line still in
        // progress is dropped).
        t.lose_connection();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init(); // weft's own logs (WEFT_LOG=debug for more) on stderr
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7000").parse()?;
    let health: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7001").parse()?;
    let mut config = EngineConfig::default();
    config.drain_timeout = Duration::from_secs(5);
    let report = Service::new(config)
        .name("shout")
        .listen(listen, |_shard| factory_fn(|_peer| Some(Shout::default())))
        .health_check(health)
        .drain_delay(Duration::from_millis(200))
        .run()?;
    println!("served {} connections", report.total().accepted);
    Ok(())
}
