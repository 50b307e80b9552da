//! A client on weft's shards: one task per shard connects with `connect_tcp`, sends a line,
//! prints the answer, and the engine stops by itself when every task is done.
//!
//! ```sh
//! cargo run --release --example client -- 127.0.0.1:7000
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use weft::{
    Address, ClientFactory, CloseReason, ConnectError, ConnectOptions, Connector, Cores, Engine,
    EngineConfig, Factory, Protocol, Transport, connect_tcp,
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

/// Builds the protocol, and hears how the attempt ended.
struct Asker {
    answer: Rc<RefCell<Vec<u8>>>,
    outcome: Rc<RefCell<Option<String>>>,
}

impl Factory for Asker {
    type Protocol = Ask;

    fn build_protocol(&mut self, _peer: &Address) -> Option<Ask> {
        Some(Ask {
            answer: self.answer.clone(),
        })
    }
}

impl ClientFactory for Asker {
    fn client_connection_failed(&mut self, _c: &Connector, reason: &ConnectError) {
        *self.outcome.borrow_mut() = Some(format!("connect failed: {reason}"));
    }

    fn client_connection_lost(&mut self, _c: &Connector, reason: &CloseReason) {
        let answer = String::from_utf8_lossy(&self.answer.borrow())
            .trim_end()
            .to_owned();
        *self.outcome.borrow_mut() = Some(format!("answer {answer:?} ({reason})"));
    }
}

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
                let outcome = Rc::new(RefCell::new(None));
                let factory = Asker {
                    answer: Rc::default(),
                    outcome: outcome.clone(),
                };
                let options = ConnectOptions::default().with_timeout(Duration::from_secs(5));
                let _connector = connect_tcp(target, factory, options);
                // The connection runs in its own task; this one waits for its end.
                while outcome.borrow().is_none() {
                    weft::shard::sleep(Duration::from_millis(5)).await;
                }
                if let Some(line) = outcome.take() {
                    println!("shard {index}: {line}");
                }
            }
        })
        .start()?;
    engine.join()?;
    Ok(())
}
