//! One client, one instance: the echo server as inetd ran it.
//!
//! With `--per-client` the host does what the study notes' server did
//! before its loop (socket, bind, listen, accept) and what a thread per
//! client did after it: for every client it accepts, it starts a fresh
//! instance of this program, whose stdin is the client's connection and
//! whose stdout writes back to it. What is left is the recv/send loop.
//! No sockets: this is a plain command, and `cat` would do the same.
//!
//! ```text
//! cargo build -p guest-per-client --release --target wasm32-wasip2
//! cargo run -p host -- --per-client target/wasm32-wasip2/release/echo-stdio.wasm
//! nc 127.0.0.1 9000                  # each client has an instance of its own
//! ```

use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    // The host names the client the way systemd's Accept=yes does.
    let client = std::env::var("REMOTE_ADDR").unwrap_or_default();
    eprintln!("serving {client}");

    let mut connection = std::io::stdin().lock();
    let mut reply = std::io::stdout().lock();
    let mut buffer = [0u8; 4096];
    loop {
        // recv(): wait for bytes from the client; 0 means it closed.
        let received = connection.read(&mut buffer)?;
        if received == 0 {
            break;
        }
        // send(): all of them back, now (stdout would wait for a newline).
        reply.write_all(&buffer[..received])?;
        reply.flush()?;
    }
    // closesocket(): returning is enough; the host closes the connection.
    eprintln!("{client} left");
    Ok(())
}
