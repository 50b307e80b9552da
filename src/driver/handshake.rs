//! The PROXY-protocol phase of a connection: read the header within its deadline, then hand
//! the connection to a protocol as from the client the header names.

use std::io;
use std::rc::Rc;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::Counted;
use super::port::{Start, establish};
use crate::addr::Address;
use crate::proto::codec::{Decoder, InBuf};
use crate::proto::protocol::Factory;
use crate::proto::proxy::{ProxyConfig, ProxyDecoder, ProxyError, ProxyHeader};
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

/// Reads the header of a connection from a trusted peer and serves the connection, or closes
/// it (dropping the stream) without calling any protocol.
pub(crate) async fn serve<F: Factory>(start: Start<F>, proxy: Rc<ProxyConfig>) {
    let Start {
        shard,
        factory,
        mut stream,
        listener,
        real_peer,
    } = start;
    // A draining shard waits for connections still in their header phase.
    let pending = Counted::new(&shard.handshakes);
    let header = futures_lite::future::or(read_header(&mut stream, &proxy, &shard.stats), async {
        Timer::new(proxy.header_timeout).await;
        Err(Failure::Timeout)
    })
    .await;
    let (header, early) = match header {
        Ok(h) => h,
        Err(failure) => {
            let counter = match failure {
                Failure::Timeout => &shard.stats.proxy_timeouts,
                _ => &shard.stats.proxy_invalid,
            };
            ShardStats::add(counter, 1);
            tracing::debug!(peer = %Address::from(real_peer), "PROXY header rejected: {failure}");
            return;
        }
    };
    let real = Address::from(real_peer);
    let peer = header.addresses.map_or(real, |a| a.source);
    let conn = establish(&shard, &factory, stream, listener, peer, real);
    // Registered with the shard (or refused): no longer pending.
    drop(pending);
    if let Some(conn) = conn {
        conn.with_input(early).run().await;
    }
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
