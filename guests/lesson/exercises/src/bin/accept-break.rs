//! Exercise 2's solution: the study notes' server exactly as they write
//! it, where a failed accept() `break`s out of the loop. One client that
//! resets while it waits in the backlog makes accept() fail (its address
//! is gone by the time it is accepted), and the whole server stops. The
//! lesson's guests `continue` instead.

use lesson_exercises::finish;
use std::net::SocketAddr;
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let addr: SocketAddr = std::env::var("LISTEN_ADDR").unwrap().parse().unwrap();
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let [a, b, c, d] = v4.ip().octets();
    let local = IpSocketAddress::Ipv4(Ipv4SocketAddress { port: v4.port(), address: (a, b, c, d) });
    let network = instance_network();
    let listen_sock = create_tcp_socket(IpAddressFamily::Ipv4).unwrap();
    let ready = listen_sock.subscribe();
    // bind(), listen(): each finish-X says would-block until it is done.
    listen_sock.start_bind(&network, local).unwrap();
    finish(&ready, || listen_sock.finish_bind()).unwrap();
    listen_sock.start_listen().unwrap();
    finish(&ready, || listen_sock.finish_listen()).unwrap();
    println!("[TCP server] listening on {addr}");
    loop {
        // accept(): wait for a client, take it, and ask for its address.
        let accepted = loop {
            match listen_sock.accept() {
                Err(ErrorCode::WouldBlock) => ready.block(),
                other => break other,
            }
        };
        let peer = accepted.as_ref().map_err(|e| *e).and_then(|(sock, _, _)| sock.remote_address());
        let (client, input, output) = match (accepted, peer) {
            (Ok(client), Ok(_)) => client,
            (Err(e), _) | (_, Err(e)) => {
                // The study notes: err_display("accept()"); break;
                println!("[TCP server] accept() failed: {}; leaving the loop", e.name());
                break;
            }
        };
        println!("[TCP server] client connected");
        // recv() until the client closes (`closed`) or the connection fails.
        while let Ok(data) = input.blocking_read(512) {
            if output.blocking_write_and_flush(&data).is_err() {
                break;
            }
        }
        drop((input, output, client));
        println!("[TCP server] client disconnected");
    }
    // closesocket(listen_sock); WSACleanup(); return 0;
    println!("[TCP server] stopped");
}
