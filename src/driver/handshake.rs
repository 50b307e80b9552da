//! The phases of a connection before its protocol: the PROXY header (read within its
//! deadline; the protocol then sees the client the header names), then the TLS handshake.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::Counted;
use super::port::{Start, establish};
use super::tls::{self, ServerTls};
use crate::addr::Address;
use crate::proto::codec::{Decoder, InBuf};
use crate::proto::protocol::Factory;
use crate::proto::proxy::{ProxyConfig, ProxyDecoder, ProxyError, ProxyHeader};
use crate::proto::tls::{HandshakeResult, TlsSession};
use crate::stats::ShardStats;

/// Why a connection never got past its header.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Invalid(#[from] ProxyError),
    #[error("the peer closed before the header was complete")]
    Closed,
    #[error("read failed: {0}")]
    Io(io::Error),
    #[error("no complete header within the deadline")]
    Timeout,
}

/// Runs a connection's phases before its protocol, each within its deadline: the PROXY
/// header from a trusted peer (when `proxy` is set), then the TLS handshake (when `tls` is
/// set). Then hands the connection to a task of its own, or closes it (dropping the stream)
/// without calling any protocol.
pub(crate) async fn serve<F: Factory>(
    start: Start<F>,
    proxy: Option<Rc<ProxyConfig>>,
    tls: Option<Rc<ServerTls>>,
) {
    let Start {
        shard,
        factory,
        mut stream,
        listener,
        real_peer,
    } = start;
    // A draining shard waits for connections still in their header or handshake phase.
    let pending = Counted::new(&shard.handshakes);
    let real = Address::from(real_peer);
    let (peer, early) = match proxy {
        Some(proxy) => match proxy_header(&mut stream, &proxy, &shard.stats).await {
            Ok((header, early)) => (header.addresses.map_or(real, |a| a.source), early),
            Err(failure) => {
                let counter = match failure {
                    Failure::Timeout => &shard.stats.proxy_timeouts,
                    _ => &shard.stats.proxy_invalid,
                };
                ShardStats::add(counter, 1);
                tracing::debug!(peer = %real, "PROXY header rejected: {failure}");
                return;
            }
        },
        None => (real, Vec::new()),
    };
    let (session, early) = match tls {
        Some(tls) => {
            if shard.config.nodelay {
                // Before the handshake: its flights must not wait for ACKs (Nagle).
                let _ = socket2::SockRef::from(&super::borrow_fd(&stream)).set_nodelay(true);
            }
            let mut session = match TlsSession::server(tls.config.clone()) {
                Ok(s) => s,
                Err(e) => {
                    shard.stats.tls_handshake(HandshakeResult::Other);
                    tracing::warn!(peer = %peer, "cannot start a TLS session: {e}");
                    return;
                }
            };
            match tls::handshake(&mut stream, &mut session, early, tls.timeout, &shard.stats).await {
                Ok(plain) => (Some(session), plain),
                Err(f) => {
                    tracing::debug!(peer = %peer, result = f.result.label(), "TLS handshake failed: {}", f.detail);
                    if let Some(s) = shard.tls_failures.borrow_mut().record(Instant::now()) {
                        tracing::info!(
                            "shard {}: {} failed{}; the last from {peer}: {} ({}) (each is logged \
                             at DEBUG; weft_tls_handshakes_total counts them by result)",
                            shard.info.index,
                            s.counted("TLS handshake"),
                            s.window(),
                            f.result.label(),
                            f.detail
                        );
                    }
                    return;
                }
            }
        }
        None => (None, early),
    };
    let conn = establish(&shard, &factory, stream, listener, peer, real);
    // Registered with the shard (or refused): no longer pending.
    drop(pending);
    if let Some(conn) = conn {
        let conn = conn.with_input(early);
        // A task of its own: this one's state (the handshake's futures) is freed now rather
        // than held beside the connection for its whole life.
        let conn = match session {
            Some(session) => conn.with_tls(session),
            None => conn,
        };
        glommio::spawn_local(conn.run()).detach();
    }
}

/// Reads the PROXY header within its deadline.
async fn proxy_header(
    stream: &mut TcpStream,
    proxy: &ProxyConfig,
    stats: &ShardStats,
) -> Result<(ProxyHeader, Vec<u8>), Failure> {
    futures_lite::future::or(read_header(stream, proxy, stats), async {
        Timer::new(proxy.header_timeout).await;
        Err(Failure::Timeout)
    })
    .await
}

/// Reads until the header is complete; returns it and the bytes read after it.
async fn read_header(
    stream: &mut TcpStream,
    proxy: &ProxyConfig,
    stats: &ShardStats,
) -> Result<(ProxyHeader, Vec<u8>), Failure> {
    let mut decoder = ProxyDecoder::new(proxy.max_header);
    // The bytes read and not decoded: at most the decoder's limit and one read.
    let mut input = InBuf::new();
    let mut chunk = vec![0u8; decoder.limit()];
    loop {
        let n = stream.read(&mut chunk).await.map_err(Failure::Io)?;
        if n == 0 {
            return Err(Failure::Closed);
        }
        ShardStats::add(&stats.bytes_in, n as u64);
        input.extend(&chunk[..n]);
        if let Some(header) = decoder.decode(&mut input)? {
            return Ok((header, input.take(input.len())));
        }
    }
}
