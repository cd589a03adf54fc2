//! Small helpers that give wasi:sockets the shape of the BSD calls.
//!
//! wasi:sockets never blocks inside a call. Slow operations are split in two
//! (`start-bind` / `finish-bind`), and "would block" is an answer, not a wait.
//! Where WinSock would block, these helpers wait on a pollable instead.

use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, Network,
};
use crate::wasi::sockets::tcp::TcpSocket;
use crate::wasi::sockets::tcp_create_socket::create_tcp_socket;
use std::net::SocketAddr;

/// The addresses to listen on: `LISTEN_ADDR` from the environment the
/// host gives us (comma-separated when it grants several, say IPv4 and
/// IPv6), or `default`.
pub fn listen_addrs(default: &str) -> Result<Vec<SocketAddr>, String> {
    let env = crate::wasi::cli::environment::get_environment();
    let text = env
        .iter()
        .find(|(key, _)| key == "LISTEN_ADDR")
        .map_or(default, |(_, value)| value.as_str());
    text.split(',')
        .map(|addr| {
            addr.trim()
                .parse()
                .map_err(|_| format!("`{addr}` is not an IP:port address such as {default}"))
        })
        .collect()
}

/// socket(): a new TCP socket of the address's family.
pub fn socket(addr: SocketAddr) -> Result<TcpSocket, String> {
    let family = match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    };
    create_tcp_socket(family).map_err(describe)
}

/// bind(): `start-bind` checks the arguments (and the host's grant),
/// `finish-bind` completes it, answering `would-block` until it has.
pub fn bind(sock: &TcpSocket, network: &Network, addr: SocketAddr) -> Result<(), String> {
    sock.start_bind(network, to_wasi(addr)).map_err(describe)?;
    finish(sock, || sock.finish_bind())
}

/// listen(): set the backlog, then `start-listen` / `finish-listen`.
pub fn listen(sock: &TcpSocket, backlog: u64) -> Result<(), String> {
    sock.set_listen_backlog_size(backlog).map_err(describe)?;
    sock.start_listen().map_err(describe)?;
    finish(sock, || sock.finish_listen())
}

/// Calls a `finish-*` function until it stops answering `would-block`,
/// sleeping on the socket's pollable in between.
pub fn finish(
    sock: &TcpSocket,
    mut step: impl FnMut() -> Result<(), ErrorCode>,
) -> Result<(), String> {
    let ready = sock.subscribe();
    loop {
        match step() {
            Err(ErrorCode::WouldBlock) => ready.block(),
            other => return other.map_err(describe),
        }
    }
}

/// One accepted connection: the socket, its two streams, and the
/// client's address.
///
/// Fields drop in declaration order: the streams before the socket they
/// belong to. The other order traps on wasmtime's own runtime ("resource
/// has children"; this repository's host allows it), which is why
/// closesocket() is "drop the streams, then the socket".
pub struct Accepted {
    pub input: InputStream,
    pub output: OutputStream,
    /// Never used directly: held so that it closes after its streams.
    #[allow(dead_code)]
    pub socket: TcpSocket,
    pub peer: SocketAddr,
}

/// accept(), without blocking: `Ok(None)` when no connection is waiting
/// (the listener's pollable says when to try again).
pub fn try_accept(listener: &TcpSocket) -> Result<Option<Accepted>, String> {
    let (socket, input, output) = match listener.accept() {
        Ok(accepted) => accepted,
        Err(ErrorCode::WouldBlock) => return Ok(None),
        Err(e) => return Err(describe(e)),
    };
    // The client's address, as accept() fills in `clientaddr`. This fails
    // when the client has already gone; `socket` and its streams are then
    // dropped here, streams first.
    match socket.remote_address() {
        Ok(addr) => Ok(Some(Accepted { input, output, socket, peer: from_wasi(addr) })),
        Err(e) => {
            drop((input, output));
            Err(format!("remote-address: {}", describe(e)))
        }
    }
}

pub fn describe(e: ErrorCode) -> String {
    format!("{} ({})", e.name(), first_line(e.message()))
}

pub fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection is closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim_end_matches('.').to_string()
}

pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: a.port(), address: (a0, a1, a2, a3) })
        }
        SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: a.flowinfo(),
                address: (s0, s1, s2, s3, s4, s5, s6, s7),
                scope_id: a.scope_id(),
            })
        }
    }
}

fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(a) => {
            let (a0, a1, a2, a3) = a.address;
            SocketAddr::from(([a0, a1, a2, a3], a.port))
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            SocketAddr::from(([s0, s1, s2, s3, s4, s5, s6, s7], a.port))
        }
    }
}
