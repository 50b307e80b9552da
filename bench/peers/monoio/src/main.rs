//! Echo server on monoio, set up as its users run it for throughput: one thread per core,
//! pinned, each with its own io_uring runtime and its own listener (monoio binds with
//! SO_REUSEPORT by default), nodelay on accept, one task per connection reading into an owned
//! buffer and writing it back. Where io_uring cannot be set up (an old kernel, a sandbox that
//! forbids it) the runtime falls back to monoio's epoll driver and says so on stderr.

use std::io;
use std::net::SocketAddr;
use std::thread;

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use peer_args::{EchoArgs, raise_nofile};

fn main() -> Result<(), String> {
    let args = EchoArgs::parse();
    let cores = args.server.cores()?;
    raise_nofile();
    let (addr, buf) = (args.server.listen, args.buf.max(1));
    let threads = cores
        .iter()
        .map(|&core| {
            thread::Builder::new()
                .name(format!("monoio-echo-{core}"))
                .spawn(move || run(core, addr, buf))
                .map_err(|e| format!("thread for core {core}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for t in threads {
        t.join()
            .map_err(|_| "a runtime thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One core's runtime: io_uring, or epoll where io_uring is unavailable.
fn run(core: usize, addr: SocketAddr, buf: usize) -> io::Result<()> {
    if let Err(e) = monoio::utils::bind_to_cpu_set([core]) {
        eprintln!("monoio-echo: could not pin to core {core}: {e}");
    }
    match RuntimeBuilder::<IoUringDriver>::new().build() {
        Ok(mut rt) => rt.block_on(serve(addr, buf)),
        Err(e) => {
            eprintln!(
                "monoio-echo: io_uring is unavailable on core {core} ({e}); falling back to \
                 monoio's epoll (legacy) driver: these figures are not monoio's io_uring path"
            );
            RuntimeBuilder::<LegacyDriver>::new()
                .build()?
                .block_on(serve(addr, buf))
        }
    }
}

async fn serve(addr: SocketAddr, buf: usize) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    loop {
        // Accept errors (EMFILE, ECONNABORTED) are not fatal: go on accepting.
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        monoio::spawn(echo(stream, buf));
    }
}

async fn echo(mut stream: TcpStream, size: usize) {
    let mut buf = Vec::with_capacity(size);
    loop {
        let (read, b) = stream.read(buf).await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (written, mut b) = stream.write_all(b).await;
        if written.is_err() {
            return;
        }
        b.clear();
        buf = b;
    }
}
