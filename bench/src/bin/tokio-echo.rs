//! Echo server on tokio, set up the strongest way for a thread-per-core comparison: one
//! current-thread runtime per core, pinned, each with its own SO_REUSEPORT listener, nodelay on
//! accept, one task per connection reading into a buffer and writing it back.

use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_bench::cli::ServerArgs;
use weft_bench::{listener, per_core, raise_nofile, resolve_cores};

/// tokio echo server, one runtime per core.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096)]
    buf: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let cores = resolve_cores(&args.server.cores)?;
    raise_nofile();
    let buf = args.buf.max(1);
    let results = per_core(&cores, move |_, _| serve(args.server.listen, buf)).map_err(|e| e.to_string())?;
    results
        .into_iter()
        .collect::<std::io::Result<Vec<()>>>()
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn serve(addr: SocketAddr, buf: usize) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener::reuseport(addr)?)?;
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
