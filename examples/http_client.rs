//! An HTTP client on weft's shards, as a gateway calls its upstream: a `client::Pipeline`
//! over `weft::http`'s client side (a `ResponseDecoder` and its `RequestEncoder`, which tells
//! it which answers have no body) pipelines a `HEAD` of the first path and a `GET` of each,
//! every request made by a task of its own, prints each answer in order, and closes.
//!
//! ```sh
//! cargo run --release --example http_client -- 127.0.0.1:8080 / /index.html
//! ```

use std::time::Duration;

use weft::client::{Pipeline, PipelineOptions};
use weft::http::{ClientResponse, Method, Request, ResponseDecoder};
use weft::{Address, ConnectOptions, Cores, Engine, EngineConfig, shard};

/// One line about an answer.
fn describe(method: &Method, path: &str, r: &ClientResponse) -> String {
    let framing = match (r.header("transfer-encoding"), r.header("content-length")) {
        (Some(_), _) => "chunked",
        (None, Some(_)) => "length",
        (None, None) => "no length",
    };
    format!(
        "{method} {path}: {} {}, {} bytes ({framing})",
        r.status,
        r.reason,
        r.body.len()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let host = target.clone();
    let target: Address = target.parse()?;
    let mut paths: Vec<String> = args.collect();
    if paths.is_empty() {
        paths.push("/".into());
    }
    let mut asked = vec![(Method::Head, paths[0].clone())];
    asked.extend(paths.iter().map(|p| (Method::Get, p.clone())));
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(1);
    let engine = Engine::builder(config)
        .on_each_shard(move |_| {
            let (host, asked) = (host.clone(), asked.clone());
            async move {
                // A decoder and the encoder that tells it about `HEAD`s, made together for
                // each connection; one attempt, no reconnecting.
                let codec = || {
                    let decoder = ResponseDecoder::default();
                    let encoder = decoder.request_encoder();
                    (decoder, encoder)
                };
                let connect = ConnectOptions::default().with_timeout(Duration::from_secs(5));
                let options = PipelineOptions::default().with_connect(connect);
                let upstream = Pipeline::connect(target, codec, options);
                // Every request is written as soon as the connection is open, without waiting
                // for the answers before it: each call gets its own answer.
                let calls: Vec<_> = asked
                    .iter()
                    .map(|(method, path)| {
                        let request =
                            Request::new(method.clone(), path.as_str()).with_header("Host", host.as_str());
                        let upstream = upstream.clone();
                        shard::spawn(async move { upstream.call(request).await })
                    })
                    .collect();
                for ((method, path), call) in asked.iter().zip(calls) {
                    match call.await {
                        Ok(Ok(r)) => println!("{}", describe(method, path, &r)),
                        Ok(Err(e)) => println!("{method} {path}: {e}"),
                        Err(e) => println!("{method} {path}: {e}"),
                    }
                }
                match upstream.close().await {
                    Some(reason) => println!("closed: {reason}"),
                    None => println!("closed: no connection was open"),
                }
            }
        })
        .start()?;
    engine.join()?;
    Ok(())
}
