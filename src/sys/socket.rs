//! Sockets: the listening socket every shard binds, accepts outside the reactor, a
//! listener's shutdown, and a Unix peer's credentials.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// A non-blocking listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT (and
/// IPV6_V6ONLY for IPv6): what every shard, and a successor process, binds.
pub(crate) fn listen_socket(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}

/// SO_ACCEPTCONN: the socket is listening.
pub(crate) fn is_listening(fd: BorrowedFd<'_>) -> bool {
    SockRef::from(&fd).is_listener().unwrap_or(false)
}

/// Non-blocking `accept4(2)` on `listener`: the new connection, non-blocking and close on
/// exec, and its peer's address; `WouldBlock` when none is queued.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, SocketAddr)> {
    let (sock, addr) = SockRef::from(&listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let owned = OwnedFd::from(sock);
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket"))?;
    Ok((owned, peer))
}

/// shutdown(2) on a listener: the kernel refuses new connections and fails the accept in
/// flight. Errors are ignored (the listener closes next anyway).
pub(crate) fn shutdown_listener(listener: BorrowedFd<'_>) {
    let _ = SockRef::from(&listener).shutdown(Shutdown::Both);
}

/// The user id of the process at the other end of a Unix socket (SO_PEERCRED).
pub(crate) fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for SO_PEERCRED's size and live for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}
