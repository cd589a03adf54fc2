//! Creates TCP sockets without end (never closing one), straight through
//! wasi:sockets, and says when and how it was refused.

use wasi::sockets::network::IpAddressFamily;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let mut held = Vec::new();
    loop {
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Ok(socket) => held.push(socket),
            Err(e) => {
                println!("refused after {} sockets: {}", held.len(), e.name());
                return;
            }
        }
    }
}
