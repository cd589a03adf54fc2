//! wasi:sockets straight, in the shape of the BSD calls, for the test
//! guests that must do what std's sockets never would (bind without
//! listening, drop a socket and keep its streams, hoard pollables).
//! Included with `#[path = "../raw.rs"] mod raw;`; each guest uses some.
#![allow(dead_code)]

use std::net::SocketAddr;
use wasi::io::streams::{InputStream, OutputStream};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasi::sockets::tcp::TcpSocket;
use wasi::sockets::tcp_create_socket::create_tcp_socket;

/// The granted listen addresses (LISTEN_ADDR, comma-separated).
pub fn listen_addrs() -> Vec<SocketAddr> {
    let text = std::env::var("LISTEN_ADDR").expect("LISTEN_ADDR");
    text.split(',').map(|a| a.parse().expect("an address")).collect()
}

/// socket() and bind().
pub fn bound(addr: SocketAddr) -> Result<TcpSocket, ErrorCode> {
    let family = match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    };
    let socket = create_tcp_socket(family)?;
    socket.start_bind(&instance_network(), to_wasi(addr))?;
    finish(&socket, || socket.finish_bind())?;
    Ok(socket)
}

/// listen() on a bound socket.
pub fn listen(socket: &TcpSocket) -> Result<(), ErrorCode> {
    socket.start_listen()?;
    finish(socket, || socket.finish_listen())
}

/// socket(), bind() and listen().
pub fn listener(addr: SocketAddr) -> Result<TcpSocket, ErrorCode> {
    let socket = bound(addr)?;
    listen(&socket)?;
    Ok(socket)
}

/// accept(), waiting for a client.
pub fn accept(listener: &TcpSocket) -> Result<(TcpSocket, InputStream, OutputStream), ErrorCode> {
    finish(listener, || listener.accept())
}

/// Calls `step` until it stops answering would-block, waiting on `socket`.
pub fn finish<T>(
    socket: &TcpSocket,
    mut step: impl FnMut() -> Result<T, ErrorCode>,
) -> Result<T, ErrorCode> {
    let ready = socket.subscribe();
    loop {
        match step() {
            Err(ErrorCode::WouldBlock) => ready.block(),
            other => return other,
        }
    }
}

/// Echoes one client until it closes (blocking calls, 4096 bytes at most).
pub fn echo(input: &InputStream, output: &OutputStream) {
    while let Ok(bytes) = input.blocking_read(4096) {
        if output.blocking_write_and_flush(&bytes).is_err() {
            return;
        }
    }
}

pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: a.port(), address: (a0, a1, a2, a3) })
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                flow_info: a.flowinfo(),
                scope_id: a.scope_id(),
            })
        }
    }
}
