//! connect(), send() and recvn() as the textbook has them: calls that wait
//! until done. wasi:sockets never waits inside a call; these wait on a
//! pollable in between.

use crate::net::{describe, stream_error, to_wasi};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::wasi::sockets::ip_name_lookup::resolve_addresses;
use crate::wasi::sockets::network::{ErrorCode, IpAddress, Network};
use crate::wasi::sockets::tcp::TcpSocket;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A connection's two streams. (Its socket is the caller's, and goes after
/// them.)
pub struct Connection {
    input: InputStream,
    output: OutputStream,
}

/// connect(): `start-connect` checks the arguments and the host's grant,
/// then `finish-connect` answers `would-block` until the connection is
/// made, or fails (refused, unreachable, ...).
pub fn connect(
    sock: &TcpSocket,
    network: &Network,
    addr: SocketAddr,
) -> Result<Connection, String> {
    sock.start_connect(network, to_wasi(addr)).map_err(describe)?;
    let ready = sock.subscribe();
    loop {
        match sock.finish_connect() {
            Ok((input, output)) => return Ok(Connection { input, output }),
            Err(ErrorCode::WouldBlock) => ready.block(),
            Err(e) => return Err(describe(e)),
        }
    }
}

/// getaddrinfo(): `text` as `IP:PORT` (`[IPv6]:PORT`) is that address;
/// as `NAME:PORT`, the addresses the name resolves to, each with the
/// port, in the resolver's order (`resolve-addresses`, then
/// `resolve-next-address` until `none`; would-block: wait).
pub fn server_addrs(network: &Network, text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (name, port) = text
        .rsplit_once(':')
        .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("`{text}` is neither IP:PORT nor NAME:PORT"))?;
    let stream = resolve_addresses(network, name).map_err(describe)?;
    let ready = stream.subscribe();
    let mut addrs = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => addrs.push(SocketAddr::new(from_wasi_ip(ip), port)),
            Ok(None) => break,
            Err(ErrorCode::WouldBlock) => ready.block(),
            Err(e) => return Err(format!("{name}: {}", describe(e))),
        }
    }
    drop(ready);
    match addrs.is_empty() {
        true => Err(format!("{name} has no address")),
        false => Ok(addrs),
    }
}

/// Each address in turn, as a getaddrinfo() loop does: a socket of its
/// family, and connect(); the first that connects wins. Fails with the
/// last address's error.
pub fn connect_any(
    network: &Network,
    addrs: &[SocketAddr],
) -> Result<(TcpSocket, Connection, SocketAddr), String> {
    let mut last = String::from("no address to try");
    for &addr in addrs {
        let sock = crate::net::socket(addr)?;
        match connect(&sock, network, addr) {
            Ok(conn) => return Ok((sock, conn, addr)),
            // With one address to try, the error alone (as connect() gives it).
            Err(e) if addrs.len() == 1 => last = e,
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

fn from_wasi_ip(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

/// send(), all of it: no more than check-write allows at a time, then a
/// blocking flush.
pub fn send_all(conn: &Connection, mut buf: &[u8]) -> Result<(), String> {
    let ready = conn.output.subscribe();
    while !buf.is_empty() {
        let allowed = conn.output.check_write().map_err(stream_error)?;
        if allowed == 0 {
            ready.block();
            continue;
        }
        let n = buf.len().min(usize::try_from(allowed).unwrap_or(usize::MAX));
        conn.output.write(&buf[..n]).map_err(stream_error)?;
        buf = &buf[n..];
    }
    conn.output.blocking_flush().map_err(stream_error)
}

/// The textbook's recvn(): exactly `len` bytes, however many reads they
/// take; an error if the server closes first.
pub fn recvn(conn: &Connection, len: usize) -> Result<Vec<u8>, String> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        match conn.input.blocking_read((len - got.len()) as u64) {
            Ok(bytes) => got.extend(bytes),
            Err(StreamError::Closed) => {
                return Err(format!("the server closed after {} of {len} bytes", got.len()))
            }
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(got)
}
