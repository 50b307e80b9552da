//! Echo server on plain glommio 0.9: one executor pinned per core, each binding its own
//! listener (glommio's `TcpListener::bind` sets SO_REUSEPORT), nodelay on accept, one task per
//! connection reading into a buffer and writing it back. Executor settings are glommio's
//! defaults.

use std::net::SocketAddr;

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use peer_args::{EchoArgs, raise_nofile};

fn main() -> Result<(), String> {
    let args = EchoArgs::parse();
    let cores = args.server.cores()?;
    raise_nofile();
    let buf = args.buf.max(1);
    let handles = cores
        .iter()
        .map(|&core| {
            LocalExecutorBuilder::new(Placement::Fixed(core))
                .name(&format!("glommio-echo-{core}"))
                .spawn(move || serve(args.server.listen, buf))
                .map_err(|e| format!("executor on core {core}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for handle in handles {
        handle
            .join()
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn serve(addr: SocketAddr, buf: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(echo(stream, buf)).detach();
    }
}

async fn echo(mut stream: TcpStream, size: usize) {
    let mut buf = vec![0u8; size];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
