//! connect(), send() and recvn() as the textbook has them: calls that wait
//! until done. wasi:sockets never waits inside a call; these wait on a
//! pollable in between.

use crate::net::{describe, stream_error, to_wasi};
use crate::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::wasi::sockets::network::{ErrorCode, Network};
use crate::wasi::sockets::tcp::TcpSocket;
use std::net::SocketAddr;

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
