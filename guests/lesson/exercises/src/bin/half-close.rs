//! Exercise 3's solution: a client that half-closes. It sends everything,
//! then `shutdown(send)` (WinSock's `shutdown(s, SD_SEND)`: a FIN), and
//! keeps reading until the server closes too. The server's recv() returns 0
//! only after every byte sent before the FIN, so nothing is lost, and the
//! client learns the echo is complete when its own read reports `closed`.
//!
//! The server is `SERVER_ADDR` (default 127.0.0.1:9000, IPv4 or IPv6).
//! What it sends: its arguments, as text; or, for one argument that is a
//! number, that many bytes (`-- 100000`).

use lesson_exercises::{finish, to_wasi};
use std::net::SocketAddr;
use wasi::io::poll::poll;
use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::IpAddressFamily;
use wasi::sockets::tcp::ShutdownType;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    if let Err(e) = run() {
        eprintln!("[half-close] {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let text = std::env::var("SERVER_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".into());
    let server: SocketAddr =
        text.parse().map_err(|_| format!("SERVER_ADDR `{text}` is not an IP:port address"))?;
    let message = message(std::env::args().skip(1).collect());

    // socket(), connect(): finish-connect says would-block until done.
    let family = if server.is_ipv4() { IpAddressFamily::Ipv4 } else { IpAddressFamily::Ipv6 };
    let sock = create_tcp_socket(family).map_err(|e| format!("socket() failed: {}", e.name()))?;
    let ready = sock.subscribe();
    sock.start_connect(&instance_network(), to_wasi(server))
        .map_err(|e| format!("connect() failed: {}", e.name()))?;
    let (input, output) = finish(&ready, || sock.finish_connect())
        .map_err(|e| format!("connect() to {server} failed: {}", e.name()))?;

    // Send and read at once: an echo server sends back while we send, and
    // a client that only reads once it has sent everything would stall
    // against a server waiting for it to read (exercise 1).
    let echoed = send_all_reading(&output, &input, &message)?;
    // shutdown(s, SD_SEND): no more data from this side.
    sock.shutdown(ShutdownType::Send).map_err(|e| format!("shutdown() failed: {}", e.name()))?;
    println!("[half-close] sent {} bytes, then shutdown(SD_SEND)", message.len());
    let echoed = read_until_closed(&input, echoed)?;
    let intact = echoed == message;
    println!(
        "[half-close] the server closed after echoing {} bytes; intact: {intact}",
        echoed.len()
    );
    drop((input, output, ready));
    Ok(())
}

/// The bytes to send: `N` bytes for one numeric argument, else the text.
fn message(args: Vec<String>) -> Vec<u8> {
    match args.as_slice() {
        [one] if one.parse::<usize>().is_ok() => {
            let n: usize = one.parse().unwrap_or_default();
            (0..n).map(|i| b'a' + (i % 26) as u8).collect()
        }
        _ => args.join(" ").into_bytes(),
    }
}

/// send() all of `message`, as much as `check-write` allows each time,
/// reading what comes back meanwhile; returns what was read.
fn send_all_reading(
    output: &OutputStream,
    input: &InputStream,
    mut message: &[u8],
) -> Result<Vec<u8>, String> {
    let mut echoed = Vec::new();
    let (can_write, can_read) = (output.subscribe(), input.subscribe());
    while !message.is_empty() {
        let allowed = output.check_write().map_err(said)?;
        if allowed > 0 {
            let n = message.len().min(allowed as usize);
            output.write(&message[..n]).map_err(said)?;
            message = &message[n..];
            continue;
        }
        // would-block: wait until there is room, or something to read.
        poll(&[&can_write, &can_read]);
        echoed.extend(input.read(65536).map_err(said)?);
    }
    output.blocking_flush().map_err(said)?;
    Ok(echoed)
}

/// recv() until it returns 0 (the stream is `closed`).
fn read_until_closed(input: &InputStream, mut echoed: Vec<u8>) -> Result<Vec<u8>, String> {
    loop {
        match input.blocking_read(65536) {
            Ok(bytes) => echoed.extend(bytes),
            Err(StreamError::Closed) => return Ok(echoed),
            Err(e) => return Err(format!("recv() failed: {}", said(e))),
        }
    }
}

fn said(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection is closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}
