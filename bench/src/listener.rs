//! The tokio peers' listening socket: one per runtime, in one SO_REUSEPORT group, as hyper's
//! TechEmpower entry sets it up.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of the peers (the common default of tokio servers and nginx on Linux).
pub const BACKLOG: i32 = 1024;

/// A non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT, ready for
/// `tokio::net::TcpListener::from_std`.
///
/// # Errors
///
/// Socket creation, an option, bind or listen failed.
pub fn reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
