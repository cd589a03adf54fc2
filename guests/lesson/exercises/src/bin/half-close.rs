//! Exercise 3's solution: a client that half-closes. It sends everything,
//! then `shutdown(send)` (WinSock's `shutdown(s, SD_SEND)`: a FIN), and
//! keeps reading until the server closes too. The server's recv() returns 0
//! only after every byte sent before the FIN, so nothing is lost, and the
//! client learns the echo is complete when its own read reports `closed`.

use lesson_exercises::finish;
use wasi::io::streams::StreamError;
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::tcp::ShutdownType;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let server: std::net::SocketAddrV4 = std::env::var("SERVER_ADDR").unwrap().parse().unwrap();
    let [a, b, c, d] = server.ip().octets();
    let remote =
        IpSocketAddress::Ipv4(Ipv4SocketAddress { port: server.port(), address: (a, b, c, d) });
    let sock = create_tcp_socket(IpAddressFamily::Ipv4).unwrap();
    sock.start_connect(&instance_network(), remote).unwrap();
    let ready = sock.subscribe();
    let (input, output) = finish(&ready, || sock.finish_connect()).unwrap();
    let message: Vec<u8> = std::env::args().skip(1).collect::<Vec<_>>().join(" ").into_bytes();
    for chunk in message.chunks(4096) {
        output.blocking_write_and_flush(chunk).unwrap();
    }
    // shutdown(s, SD_SEND): no more data from this side.
    sock.shutdown(ShutdownType::Send).unwrap();
    println!("[half-close] sent {} bytes, then shutdown(SD_SEND)", message.len());
    let mut echoed = Vec::new();
    loop {
        match input.blocking_read(65536) {
            Ok(bytes) => echoed.extend(bytes),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => panic!("{}", e.to_debug_string()),
        }
    }
    let intact = echoed == message;
    println!(
        "[half-close] the server closed after echoing {} bytes; intact: {intact}",
        echoed.len()
    );
    drop((input, output, ready));
}
