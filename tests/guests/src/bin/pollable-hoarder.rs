//! Makes pollables without end and never drops one: from a timer (made by
//! wasmtime-wasi), or with the argument `tcp`, from a TCP socket (made by
//! the host's own TCP). The host must stop it at a stated limit, its own
//! memory bounded.

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::sockets::network::IpAddressFamily;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let tcp = std::env::args().nth(1).as_deref() == Some("tcp");
    let socket = create_tcp_socket(IpAddressFamily::Ipv4).expect("a socket");
    let mut held = Vec::new();
    loop {
        let pollable = match tcp {
            true => socket.subscribe(),
            false => subscribe_duration(3_600_000_000_000),
        };
        held.push(pollable);
        if held.len() % 1000 == 0 {
            println!("holding {} pollables", held.len());
        }
    }
}
