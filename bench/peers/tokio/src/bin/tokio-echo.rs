//! Echo server on tokio, set up the strongest way for a thread-per-core comparison: one
//! current-thread runtime per core, pinned, each with its own SO_REUSEPORT listener, nodelay on
//! accept, one task per connection reading into a buffer and writing it back.

use clap::Parser;
use peer_args::{EchoArgs, raise_nofile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_peers::per_core;

fn main() -> Result<(), String> {
    let args = EchoArgs::parse();
    let cores = args.server.cores()?;
    raise_nofile();
    let buf = args.buf.max(1);
    per_core(&cores, args.server.listen, move |listener| serve(listener, buf)).map_err(|e| e.to_string())
}

async fn serve(listener: TcpListener, buf: usize) -> std::io::Result<()> {
    loop {
        // Accept errors (EMFILE, ECONNABORTED) are not fatal: go on accepting.
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo(stream, buf));
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
