//! The native baseline: tokio's canonical echo server (examples/echo.rs in
//! the tokio repository), with three changes for a fair comparison: the same
//! 64 KiB read size as the default guest, TCP_NODELAY on each client as the
//! host gives its guest (host/src/sockets/tcp.rs), unless `--nagle`, and a
//! client error ends that client instead of panicking.
//!
//! usage: native-echo ADDR:PORT [--nagle]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The default guest's `MAX_BUFFERED`.
const READ_SIZE: usize = 64 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let nodelay = std::env::args().nth(2).as_deref() != Some("--nagle");
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(nodelay);
        tokio::spawn(async move {
            let mut buf = vec![0; READ_SIZE];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
