//! What the exercises' solutions share.

use std::net::SocketAddr;
use wasi::io::poll::Pollable;
use wasi::sockets::network::{ErrorCode, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress};

/// A `finish-X` call (bind, listen, connect) until it stops answering
/// `would-block` ("not yet"), sleeping on the socket's pollable meanwhile:
/// the one step a blocking WinSock call does by itself.
pub fn finish<T>(
    ready: &Pollable,
    mut finish: impl FnMut() -> Result<T, ErrorCode>,
) -> Result<T, ErrorCode> {
    loop {
        match finish() {
            Err(ErrorCode::WouldBlock) => ready.block(),
            done => return done,
        }
    }
}

/// A std address (`SOCKADDR_IN` or `SOCKADDR_IN6`) as wasi:sockets spells
/// it: the family is in the variant, so there is no length to get wrong.
pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: v4.port(), address: (a, b, c, d) })
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                address: (a, b, c, d, e, f, g, h),
                flow_info: v6.flowinfo(),
                scope_id: v6.scope_id(),
            })
        }
    }
}
