//! Creates TCP sockets without end (never closing one), straight through
//! wasi:sockets, and says when and how it was refused; then tries 99 times
//! more, so that the host is asked again and again.

use wasi::sockets::network::IpAddressFamily;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let mut held = Vec::new();
    loop {
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Ok(socket) => held.push(socket),
            Err(e) => {
                println!("refused after {} sockets: {}", held.len(), e.name());
                let again = (0..99).filter(|_| create_tcp_socket(IpAddressFamily::Ipv4).is_err());
                println!("refused {} times more", again.count());
                return;
            }
        }
    }
}
