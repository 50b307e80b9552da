//! A line gateway: each line a client sends is forwarded to an upstream line service, and
//! its reply sent back, in order. Every shard keeps one persistent connection to the upstream
//! (`client::Pipeline`), made in the listen closure and shared by all its clients' answers,
//! which pipeline their calls over it. A call that gets no reply (the upstream down or
//! reconnecting, too slow, too many calls at once) is answered with `ERR <why>: <what to do>`.
//! At shutdown the upstream connections close once their calls are answered.
//!
//! ```sh
//! weft serve --proto echo --listen 127.0.0.1:7001 &
//! cargo run --release --example gateway -- 127.0.0.1:7000 127.0.0.1:7001
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use weft::client::{Pipeline, PipelineOptions};
use weft::codec::{Answer, Answered, Framed, LineDecoder, LineEncoder};
use weft::{Destination, EngineConfig, Service, factory_fn};

/// The longest line taken from a client or from the upstream.
const MAX_LINE: usize = 16 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7000").parse()?;
    let upstream: Destination = args.next().as_deref().unwrap_or("127.0.0.1:7001").parse()?;
    Service::new(EngineConfig::default())
        .name("gateway")
        .listen(listen, move |_shard| {
            // Runs on each shard: that shard's connection to the upstream.
            let options = PipelineOptions::default().with_call_timeout(Some(Duration::from_secs(2)));
            let lines = || (LineDecoder::new(MAX_LINE), LineEncoder::lf());
            let upstream = Pipeline::connect(upstream.clone(), lines, options);
            factory_fn(move |_peer| {
                let upstream = upstream.clone();
                let answer = move |line: Vec<u8>| {
                    let upstream = upstream.clone();
                    async move {
                        match upstream.call(line).await {
                            Ok(reply) => Answer::Send(reply),
                            Err(e) => Answer::Send(format!("ERR {}: {e}", e.label()).into_bytes()),
                        }
                    }
                };
                // Up to 16 of a client's pipelined lines are forwarded at once.
                let answered = Answered::new(LineEncoder::lf(), answer).concurrency(16);
                Some(Framed::new(LineDecoder::new(MAX_LINE), answered))
            })
        })
        .run()?;
    Ok(())
}
