//! accept(), recv() and send() as the study notes know them: calls that wait.
//!
//! wasi:sockets never waits inside a call; waiting is `block()` on a
//! pollable. These helpers put the two together.

use crate::net::{self, Accepted};
use crate::wasi::io::streams::StreamError;
use crate::wasi::sockets::tcp::TcpSocket;

/// accept(): `accept` never blocks, so wait on the listener's pollable
/// until a connection is ready, the way a blocking accept() would.
pub fn accept(listener: &TcpSocket) -> Result<Accepted, String> {
    let ready = listener.subscribe();
    loop {
        match net::try_accept(listener)? {
            Some(client) => return Ok(client),
            None => ready.block(),
        }
    }
}

/// What one recv() returned.
pub enum Recv {
    /// 1..=len bytes: whatever had arrived, maybe less than asked for.
    Data(Vec<u8>),
    /// recv() == 0: the peer closed its side (the stream is `closed`).
    Closed,
    /// SOCKET_ERROR.
    Failed(String),
}

/// recv(): wait for at least one byte, then take up to `len`.
pub fn recv(client: &Accepted, len: u64) -> Recv {
    loop {
        match client.input.blocking_read(len) {
            // An empty read is not the end of the stream: wait again.
            Ok(buf) if buf.is_empty() => continue,
            Ok(buf) => return Recv::Data(buf),
            Err(StreamError::Closed) => return Recv::Closed,
            Err(StreamError::LastOperationFailed(e)) => return Recv::Failed(e.to_debug_string()),
        }
    }
}

/// send(), all of it: write no more than `check-write` allows at a time
/// (writing more traps), waiting while the send buffer is full, then flush
/// so that nothing is left behind.
pub fn send_all(client: &Accepted, mut buf: &[u8]) -> Result<(), String> {
    let output = &client.output;
    let ready = output.subscribe();
    while !buf.is_empty() {
        let allowed = output.check_write().map_err(net::stream_error)?;
        if allowed == 0 {
            ready.block();
            continue;
        }
        let n = buf.len().min(usize::try_from(allowed).unwrap_or(usize::MAX));
        output.write(&buf[..n]).map_err(net::stream_error)?;
        buf = &buf[n..];
    }
    output.blocking_flush().map_err(net::stream_error)
}

/// Received bytes as one printable line: escaped, and cut after 64 bytes.
pub fn printable(buf: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut line = buf[..buf.len().min(SHOWN)].escape_ascii().to_string();
    if buf.len() > SHOWN {
        line += &format!("... ({} bytes)", buf.len());
    }
    line
}
