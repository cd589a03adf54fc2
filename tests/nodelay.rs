//! Nagle's algorithm is off on the guest's connections (TCP_NODELAY, set by
//! the host on each client it accepts), unless `--nagle`.
//!
//! The option lives on the host's side of the connection, so the test looks
//! at the host's own socket: `pidfd_getfd` copies it out of the host
//! process (a child of this one) for `getsockopt`.

use crate::support::guests::{default_guest, test_guest};
use crate::support::{connect, host_socket, Host};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// TCP_NODELAY on the host's end of `client`'s connection.
fn nodelay_at_host(host: &Host, client: &TcpStream) -> bool {
    let ours = client.local_addr().unwrap();
    let theirs = host_socket(host, |s| peer(s) == Some(ours))
        .unwrap_or_else(|| panic!("no socket in the host is connected to {ours}"));
    SockRef::from(&theirs).tcp_nodelay().unwrap()
}

fn peer(socket: &SockRef) -> Option<SocketAddr> {
    socket.peer_addr().ok()?.as_socket()
}

/// Connects and has one echo, so that the guest has accepted this client;
/// the connection stays open.
fn echoing_client(addr: SocketAddr) -> TcpStream {
    let mut client = connect(addr);
    client.write_all(b"hello").unwrap();
    let mut echoed = [0; 5];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");
    client
}

fn the_guests_clients_get_tcp_nodelay() {
    let (host, addr) = Host::serve(None);
    let client = echoing_client(addr);
    assert!(nodelay_at_host(&host, &client), "{}", host.report());
}

fn a_guest_built_with_std_gets_it_too() {
    // std's TcpListener::bind is socket(), bind(), listen() underneath,
    // through wasi-libc: the same wasi:sockets calls the host sees.
    let (host, addr) = Host::serve(Some(&test_guest("echo-std")));
    let client = echoing_client(addr);
    assert!(nodelay_at_host(&host, &client), "{}", host.report());
}

fn nagle_keeps_the_system_default() {
    let guest = default_guest();
    let host = Host::start(&["--nagle", "--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    let client = echoing_client(host.listen_addr());
    assert!(!nodelay_at_host(&host, &client), "{}", host.report());
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        the_guests_clients_get_tcp_nodelay [needs need::pidfd_getfd()],
        a_guest_built_with_std_gets_it_too [needs need::pidfd_getfd()],
        nagle_keeps_the_system_default [needs need::pidfd_getfd()],
    ]
}
