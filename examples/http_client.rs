//! An HTTP client on weft's shards, as a gateway calls its upstream: one task connects with
//! `connect_tcp`, and the connection, a `Framed<ResponseDecoder, _>`, pipelines a `HEAD` of
//! the first path and a `GET` of each (written by the decoder's `RequestEncoder`, which tells
//! it which answers have no body), prints each answer and closes after the last.
//!
//! ```sh
//! cargo run --release --example http_client -- 127.0.0.1:8080 / /index.html
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use weft::codec::{FrameHandler, Framed};
use weft::http::{BadResponse, ClientResponse, Method, Request, RequestEncoder, ResponseDecoder};
use weft::{Address, ConnectOptions, Cores, Engine, EngineConfig, Transport, connect_tcp, factory_fn};

/// Sends its requests at once, then reads their answers in order.
struct Fetch {
    encoder: RequestEncoder,
    host: String,
    asked: Vec<(Method, String)>,
    answered: usize,
    lines: Rc<RefCell<Vec<String>>>,
}

impl FrameHandler for Fetch {
    type Decoder = ResponseDecoder;

    fn connection_made(&mut self, t: &Transport) {
        for (method, path) in &self.asked {
            let request = Request::new(method.clone(), path.as_str()).with_header("Host", self.host.as_str());
            if let Err(e) = t.write_frame(&mut self.encoder, request) {
                self.lines
                    .borrow_mut()
                    .push(format!("cannot send {method} {path}: {e}"));
                t.lose_connection();
                return;
            }
        }
    }

    fn frame_received(&mut self, r: ClientResponse, t: &Transport) {
        let (method, path) = self
            .asked
            .get(self.answered)
            .cloned()
            .unwrap_or((Method::Get, "?".into()));
        let framing = match (r.header("transfer-encoding"), r.header("content-length")) {
            (Some(_), _) => "chunked",
            (None, Some(_)) => "length",
            (None, None) => "no length",
        };
        let line = format!(
            "{method} {path}: {} {}, {} bytes ({framing})",
            r.status,
            r.reason,
            r.body.len()
        );
        self.lines.borrow_mut().push(line);
        self.answered += 1;
        if self.answered == self.asked.len() || !r.keep_alive() {
            t.lose_connection();
        }
    }

    fn decode_failed(&mut self, e: BadResponse, t: &Transport) {
        self.lines.borrow_mut().push(format!("bad response: {e}"));
        t.abort_connection();
    }
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
                let lines = Rc::new(RefCell::new(Vec::new()));
                let sink = lines.clone();
                let factory = factory_fn(move |_: &Address| {
                    let decoder = ResponseDecoder::default();
                    let encoder = decoder.request_encoder();
                    let (host, asked, lines) = (host.clone(), asked.clone(), sink.clone());
                    let fetch = Fetch {
                        encoder,
                        host,
                        asked,
                        answered: 0,
                        lines,
                    };
                    Some(Framed::new(decoder, fetch))
                });
                let options = ConnectOptions::default().with_timeout(Duration::from_secs(5));
                let connector = connect_tcp(target, factory, options);
                match connector.connected().await {
                    Err(e) => println!("connect failed: {e}"),
                    Ok(t) => {
                        let reason = t.closed().await;
                        lines.borrow().iter().for_each(|l| println!("{l}"));
                        println!("closed: {reason}");
                    }
                }
            }
        })
        .start()?;
    engine.join()?;
    Ok(())
}
