//! The echo server in plain Rust `std::net`, built for `wasm32-wasip2`.
//!
//! The standard library reaches wasi:sockets through wasi-libc, so this
//! reads like any Rust echo server. One thing differs from the raw guest
//! (`guest/`): when a client resets before `accept()` returns, wasi-libc
//! aborts the whole program instead of returning an error. Run it with
//! `--restart on-failure` and the host starts it again.
//!
//! ```text
//! cargo build -p guest-rust-std --release --target wasm32-wasip2
//! cargo run -p host -- --restart on-failure target/wasm32-wasip2/release/echo-std.wasm
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    // The host passes the granted address(es); take the first.
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:9000".to_string());
    let addr = addr.split(',').next().unwrap_or_default().to_string();

    // socket(), bind(), listen() in one call.
    let listener = match TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("[std echo] bind({addr}) failed: {e}");
            std::process::exit(1);
        }
    };
    println!("[std echo] listening on {addr}");

    // accept(), one client at a time.
    for client in listener.incoming() {
        match client {
            Ok(client) => echo(client),
            Err(e) => eprintln!("[std echo] accept() failed: {e}"),
        }
    }
}

/// recv() and send() until the client closes; closesocket() on drop.
fn echo(mut client: TcpStream) {
    let peer = client.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    println!("[std echo] client connected: {peer}");
    let mut buf = [0u8; 16 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = client.write_all(&buf[..n]) {
                    eprintln!("[std echo] send() failed: {e}");
                    break;
                }
            }
            Err(e) => {
                eprintln!("[std echo] recv() failed: {e}");
                break;
            }
        }
    }
    println!("[std echo] client disconnected: {peer}");
}
