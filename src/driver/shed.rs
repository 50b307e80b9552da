//! Connections refused for overload, told why: the factory's overload answer (an HTTP 503,
//! Redis's "max number of clients reached") is written, our side shut, and what the peer
//! sent is read and dropped for a bounded while before the close, so that the peer reads the
//! answer instead of a reset (closing a socket with unread bytes resets it, and a reset makes
//! the peer's kernel drop what it has not read yet).

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::Counted;
use super::shard::ShardCtx;
use crate::sys;

/// How long a refused connection is read before it is closed anyway.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read from a refused connection.
const MAX_READ: usize = 64 * 1024;
/// Refused connections a shard lingers on at once; past it they are closed at once (a reset
/// if they sent something), so that an overload does not hold descriptors for long.
pub(crate) const MAX_LINGERING: usize = 256;

/// Writes `answer` to the refused connection `conn` without waiting, shuts our side, then
/// lingers on it in a task of its own (within [`MAX_LINGERING`]).
pub(crate) fn refuse(shard: &Rc<ShardCtx>, conn: OwnedFd, answer: &[u8]) {
    if shard.lingering.get() >= MAX_LINGERING {
        return;
    }
    let socket = socket2::Socket::from(conn);
    // A new connection's send buffer takes a short answer whole; what does not fit is lost.
    let _ = socket.send_with_flags(answer, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let mut stream: TcpStream = sys::fd::adopt(OwnedFd::from(socket));
    // Counted now, not when the task first runs: a burst of refusals comes in one turn.
    shard.lingering.set(shard.lingering.get() + 1);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let _lingering = Counted::adopt(&shard.lingering);
        let drain = async {
            let mut buf = [0u8; 4096];
            let mut read = 0;
            while read < MAX_READ {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        };
        let linger = async {
            Timer::new(LINGER).await;
        };
        futures_lite::future::or(drain, linger).await;
    })
    .detach();
}
