//! A client on weft's shards: one task per shard connects with `connect_tcp`, sends a line,
//! awaits the connection's end (`Connector::connected`, `Transport::closed`), prints the
//! answer, and the engine stops by itself when every task is done.
//!
//! ```sh
//! cargo run --release --example client -- 127.0.0.1:7000
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use weft::{
    Address, ClientFactory, ConnectOptions, Cores, Engine, EngineConfig, Factory, Protocol, Transport,
    connect_tcp,
};

/// Sends one line and keeps what comes back until the peer closes or a line ends.
struct Ask {
    answer: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Ask {
    fn connection_made(&mut self, t: &Transport) {
        t.write(b"hello from a weft shard\n");
    }

    fn data_received(&mut self, data: &[u8], t: &Transport) {
        self.answer.borrow_mut().extend_from_slice(data);
        if data.ends_with(b"\n") {
            t.lose_connection();
        }
    }
}

/// Builds the protocol.
struct Asker {
    answer: Rc<RefCell<Vec<u8>>>,
}

impl Factory for Asker {
    type Protocol = Ask;

    fn build_protocol(&mut self, _peer: &Address) -> Option<Ask> {
        Some(Ask {
            answer: self.answer.clone(),
        })
    }
}

/// The callbacks' defaults: this client awaits the connector's futures instead.
impl ClientFactory for Asker {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let target: Address = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:7000")
        .parse()?;
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let engine = Engine::builder(config)
        .on_each_shard(move |shard| {
            let index = shard.index;
            async move {
                let answer = Rc::new(RefCell::new(Vec::new()));
                let factory = Asker {
                    answer: answer.clone(),
                };
                let options = ConnectOptions::default().with_timeout(Duration::from_secs(5));
                let connector = connect_tcp(target, factory, options);
                // The connection runs in its own task; this one awaits its start and its end.
                let line = match connector.connected().await {
                    Err(e) => format!("connect failed: {e}"),
                    Ok(t) => {
                        let reason = t.closed().await;
                        let answer = String::from_utf8_lossy(&answer.borrow()).trim_end().to_owned();
                        format!("answer {answer:?} ({reason})")
                    }
                };
                println!("shard {index}: {line}");
            }
        })
        .start()?;
    engine.join()?;
    Ok(())
}
