//! A counter API over HTTP/1.1 on two shards, with `weft::http`: every counter lives on the
//! shard its name hashes to, and requests from other shards reach it with `submit_to`.
//! Pipelined requests are answered in order, bodies may be chunked, a client that sends
//! `Expect: 100-continue` gets `100 Continue`, bad requests get their 4xx and a close, and a
//! request that takes over 10 s to arrive gets a 408 and a close. `/lines/N` streams N lines,
//! in chunks as they are made, to a client that may read them slowly.
//!
//! ```sh
//! cargo run --release --example http_api -- 127.0.0.1:7400
//! curl -d 5 127.0.0.1:7400/counter/a      # {"name":"a","value":5}
//! curl 127.0.0.1:7400/counter/a           # {"name":"a","value":5}
//! curl 127.0.0.1:7400/lines/3             # line 1, line 2, line 3
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use weft::codec::{Answer, Answered, Framed};
use weft::http::{
    BodyWriter, CONTINUE, HttpError, HttpLimits, Method, Request, RequestDecoder, Response, ResponseEncoder,
};
use weft::{Cores, EngineConfig, Service, factory_fn, shard};

/// One shard's part of the counters.
type Counters = RefCell<HashMap<String, i64>>;

fn json(status: u16, body: String) -> Response {
    Response::new(status)
        .with_header("Content-Type", "application/json")
        .with_body(body)
}

/// `GET|HEAD /counter/NAME` reads a counter, `POST /counter/NAME` adds its body to it.
async fn route(req: &Request) -> Response {
    let name = req.path_only().strip_prefix("/counter/").filter(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let Some(name) = name else {
        return json(404, r#"{"error":"no such counter route"}"#.into());
    };
    let add = match req.method {
        Method::Get | Method::Head => 0,
        Method::Post => match std::str::from_utf8(&req.body).map(|b| b.trim().parse::<i64>()) {
            Ok(Ok(n)) => n,
            _ => return json(400, r#"{"error":"the body must be an integer"}"#.into()),
        },
        _ => {
            return json(405, r#"{"error":"use GET, HEAD or POST"}"#.into())
                .with_header("Allow", "GET, HEAD, POST");
        }
    };
    let key = name.to_owned();
    let value = shard::submit_to(shard::owner_of(name), move |counters: &Counters| {
        let mut counters = counters.borrow_mut();
        let value = counters.entry(key).or_default();
        *value = value.saturating_add(add);
        *value
    });
    match value.await {
        Ok(value) => json(200, format!(r#"{{"name":"{name}","value":{value}}}"#)),
        Err(e) => json(503, format!(r#"{{"error":"{e}"}}"#)),
    }
}

/// The most lines `/lines/N` streams.
const MAX_LINES: u32 = 10_000_000;

/// `GET|HEAD /lines/N`: N numbered lines, of a length not known in advance: streamed in
/// chunks of up to 1,000 lines (to an HTTP/1.0 client, up to the close), in the request's
/// turn, each chunk once the client has read enough of the ones before.
fn lines(req: &Request, n: u32) -> Answer<Response> {
    let head = Response::ok()
        .with_header("Content-Type", "text/plain")
        .answering(req);
    head.stream(None, move |mut body: BodyWriter| async move {
        let mut chunk = String::new();
        for i in 1..=n {
            chunk.push_str(&format!("line {i}\n"));
            if i % 1000 == 0 || i == n {
                body.write(chunk.as_bytes()).await?;
                chunk.clear();
            }
        }
        Ok(())
    })
}

/// Answers one request; one that does not keep the connection alive closes it.
async fn answer(req: Request) -> Answer<Response> {
    if let Some(n) = req.path_only().strip_prefix("/lines/")
        && let Ok(n) = n.parse::<u32>()
    {
        return lines(&req, n.min(MAX_LINES));
    }
    // Draining, every request received is answered; `last_answer` below marks the last.
    let response = route(&req).await.answering(&req);
    if response.closes() {
        Answer::SendAndClose(response)
    } else {
        Answer::Send(response)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:7400")
        .parse()?;
    let mut config = EngineConfig::default();
    config.cores = Cores::Count(2);
    let limits = HttpLimits {
        max_body: 64 * 1024,
        ..HttpLimits::default()
    };
    Service::new(config)
        .name("http_api")
        .shard_state(|_| Counters::default())
        .listen(listen, move |_| {
            factory_fn(move |_peer| {
                let answered = Answered::new(ResponseEncoder::new(), answer)
                    // Up to 4 pipelined requests answered at once, their answers in order.
                    .concurrency(4)
                    // 400, 413, 431, 501, 505: answered after the requests before, then closed.
                    .on_decode_error(|e: HttpError| Some(e.response()))
                    // A request trickled in (slowloris): 408, then closed.
                    .request_timeout(Duration::from_secs(10), || Some(Response::new(408).close()))
                    // At a shutdown or handoff an idle keep-alive connection waits 1 s for a
                    // request its client may be sending, answered with `Connection: close`.
                    .drain_grace(Duration::from_secs(1))
                    // The last answer before a close (the drain, the client's EOF) says so:
                    // `Connection: close`.
                    .last_answer(Response::close)
                    // 100 Continue, once every earlier request is answered.
                    .interim(|d: &RequestDecoder| d.expects_continue().then(|| CONTINUE.to_vec()));
                Some(Framed::new(RequestDecoder::new(limits), answered))
            })
        })
        .run()?;
    Ok(())
}
