//! Section 8.6 and exercise 6's solution: the step-1 server, giving each
//! client a few seconds (the first argument, default 5) to send something.
//! A client that stays silent longer is closed.
//!
//! WinSock would set `SO_RCVTIMEO` and let `recv()` fail with
//! `WSAETIMEDOUT`. wasi:sockets has no such option: a guest waits on two
//! pollables at once, the stream's and a clock's, and sees which is ready.

use lesson_exercises::finish;
use std::net::SocketAddr;
use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::poll;
use wasi::io::streams::StreamError;
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(5, |s| s.parse().unwrap());
    let addr: SocketAddr = std::env::var("LISTEN_ADDR").unwrap().parse().unwrap();
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let [a, b, c, d] = v4.ip().octets();
    let local = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: v4.port(), address: (a, b, c, d) });

    // socket(), bind(), listen(): each finish-X says would-block until done.
    let listen_sock = create_tcp_socket(IpAddressFamily::Ipv4).unwrap();
    let ready = listen_sock.subscribe();
    listen_sock.start_bind(&instance_network(), local).unwrap();
    finish(&ready, || listen_sock.finish_bind()).unwrap();
    listen_sock.start_listen().unwrap();
    finish(&ready, || listen_sock.finish_listen()).unwrap();
    println!("[TCP server] listening on {addr}, {seconds}s per client to speak");

    loop {
        // accept()
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
        loop {
            // recv() with a timeout: wait for data or the clock, whichever
            // comes first (WSAPoll with a timeout, in WinSock terms).
            let data = input.subscribe();
            let timer = subscribe_duration(seconds * 1_000_000_000);
            if !poll(&[&data, &timer]).contains(&0) {
                println!("[TCP server] recv() timed out after {seconds}s: closing");
                break;
            }
            match input.read(512) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => {
                    if output.blocking_write_and_flush(&bytes).is_err() {
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    println!("[TCP server] recv() failed: {}", e.to_debug_string());
                    break;
                }
            }
        }
        // closesocket(): the streams, then the socket.
        drop((input, output, client));
        println!("[TCP server] client disconnected");
    }
}
