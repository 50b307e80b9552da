//! What the tokio peers share: one pinned current-thread runtime per core, each serving its
//! own SO_REUSEPORT listener (the thread-per-core tokio set-up of hyper's TechEmpower entry).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog (the common default of tokio servers and nginx on Linux).
const BACKLOG: i32 = 1024;

/// Runs `serve(listener)` on one pinned thread per core, each with its own current-thread
/// runtime and its own listener on `addr`; returns when they all have.
///
/// # Errors
///
/// A listener or runtime that could not be set up, a server that failed, or a thread that
/// panicked.
pub fn per_core<F, Fut>(cores: &[usize], addr: SocketAddr, serve: F) -> io::Result<()>
where
    F: Fn(tokio::net::TcpListener) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = io::Result<()>>,
{
    let threads = cores
        .iter()
        .map(|&core| {
            let serve = serve.clone();
            thread::Builder::new()
                .name(format!("core-{core}"))
                .spawn(move || -> io::Result<()> {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()?;
                    rt.block_on(async { serve(tokio::net::TcpListener::from_std(reuseport(addr)?)?).await })
                })
        })
        .collect::<io::Result<Vec<_>>>()?;
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a runtime thread panicked"))??;
    }
    Ok(())
}

/// A non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT.
fn reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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
