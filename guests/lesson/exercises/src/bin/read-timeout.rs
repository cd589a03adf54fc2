//! Exercise 5's solution, and section 8.6's example: the step-1 server,
//! changed so that a client that sends nothing for a few seconds (the
//! first argument, default 5) is closed, as `SO_RCVTIMEO` would do in
//! WinSock.
//!
//! WinSock would set `SO_RCVTIMEO` and let `recv()` fail with
//! `WSAETIMEDOUT`. wasi:sockets has no such option: a guest waits on two
//! pollables at once, the stream's and a clock's, and sees which is ready.
//! Everything else is step 1: the address from `LISTEN_ADDR` (IPv4 or
//! IPv6), every `would-block` waited out, every failure said in a line.

use lesson_exercises::{finish, to_wasi};
use std::net::SocketAddr;
use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::poll;
use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{ErrorCode, IpAddressFamily};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    if let Err(e) = serve() {
        eprintln!("[TCP server] {e}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), String> {
    let seconds: u64 = match std::env::args().nth(1) {
        None => 5,
        Some(arg) => arg.parse().map_err(|_| format!("`{arg}` is not a number of seconds"))?,
    };
    // SOCKADDR_IN(6) serveraddr: the first address the host grants.
    let text = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:9000".into());
    let first = text.split(',').next().unwrap_or_default();
    let addr: SocketAddr =
        first.parse().map_err(|_| format!("`{first}` is not an IP:port address"))?;

    // socket(), bind(), listen(): each finish-X says would-block until done.
    let family = if addr.is_ipv4() { IpAddressFamily::Ipv4 } else { IpAddressFamily::Ipv6 };
    let listen_sock = create_tcp_socket(family).map_err(|e| failed("socket()", e))?;
    let ready = listen_sock.subscribe();
    listen_sock.start_bind(&instance_network(), to_wasi(addr)).map_err(|e| failed("bind()", e))?;
    finish(&ready, || listen_sock.finish_bind()).map_err(|e| failed("bind()", e))?;
    listen_sock.start_listen().map_err(|e| failed("listen()", e))?;
    finish(&ready, || listen_sock.finish_listen()).map_err(|e| failed("listen()", e))?;
    println!("[TCP server] listening on {addr}, {seconds}s per client to speak");

    loop {
        // accept(): wait on the listener while it says would-block.
        let (client, input, output) = match listen_sock.accept() {
            Err(ErrorCode::WouldBlock) => {
                ready.block();
                continue;
            }
            Err(e) => {
                println!("[TCP server] accept() failed: {}", e.name());
                continue;
            }
            Ok(accepted) => accepted,
        };
        println!("[TCP server] client connected");
        echo_with_a_deadline(&input, &output, seconds);
        // closesocket(): the streams, then the socket.
        drop((input, output, client));
        println!("[TCP server] client disconnected");
    }
}

/// The recv()/send() loop, each recv() with a deadline: the change.
fn echo_with_a_deadline(input: &InputStream, output: &OutputStream, seconds: u64) {
    loop {
        // recv() with a timeout: wait for data or the clock, whichever
        // comes first (WSAPoll with a timeout, in WinSock terms).
        let data = input.subscribe();
        let timer = subscribe_duration(seconds * 1_000_000_000);
        if !poll(&[&data, &timer]).contains(&0) {
            println!("[TCP server] recv() timed out after {seconds}s: closing");
            return;
        }
        match input.read(512) {
            // Nothing yet after all: wait again.
            Ok(bytes) if bytes.is_empty() => continue,
            Ok(bytes) => {
                // send(), all of it: blocking-write-and-flush waits out
                // would-block (a full send buffer) in 4 KiB steps.
                for chunk in bytes.chunks(4096) {
                    if let Err(e) = output.blocking_write_and_flush(chunk) {
                        return println!("[TCP server] send() failed: {}", said(e));
                    }
                }
            }
            Err(StreamError::Closed) => return,
            Err(e) => return println!("[TCP server] recv() failed: {}", said(e)),
        }
    }
}

fn failed(call: &str, e: ErrorCode) -> String {
    format!("{call} failed: {} ({})", e.name(), e.message())
}

fn said(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection is closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}
