//! recv() and send(): the input and output streams of a TCP connection.
//!
//! They are wasmtime-wasi-io's `InputStream` and `OutputStream`, so the
//! guest's `wasi:io/streams` calls reach them through the same functions as
//! every other stream, except `write` (`send.rs` passes the bytes where they
//! lie in the guest's memory to [`write`]); what is ours is what happens
//! underneath:
//!
//! - a read asks the system once: into a buffer that is not zeroed first,
//!   and a read that comes back short tells the async runtime that the
//!   socket is drained, so the next read answers "nothing yet" without
//!   asking the system again;
//! - a write is sent at once; only what the system does not take at once
//!   is copied and left to a background send (`connection.rs`), which
//!   finishes even if the guest drops the stream (nothing the guest wrote
//!   is lost), then sends the FIN.

use super::connection::{Connection, Held};
use crate::metrics::METRICS;
use crate::trace::{StreamEnd, Tracer};
use bytes::{Bytes, BytesMut};
use socket2::SockRef;
use std::io::ErrorKind;
use std::sync::Arc;
use tokio::io::Interest;
use tokio::net::TcpStream;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most one read returns and one check-write grants.
pub use crate::ledger::MAX_CHUNK;

/// The input stream.
pub struct Reader {
    conn: Held,
    state: ReadState,
    tracer: Option<Tracer>,
    /// What the trace calls it: `input-stream`, or `stdin`.
    name: &'static str,
}

enum ReadState {
    Open,
    /// A failure was reported once; from now on the stream is closed.
    Closed,
}

impl Reader {
    pub fn new(conn: &Arc<Connection>, tracer: Option<Tracer>) -> Self {
        Reader { conn: Held::new(conn), state: ReadState::Open, tracer, name: "input-stream" }
    }

    /// A client's connection as an instance's stdin (`--per-client`).
    pub fn stdin(conn: &Arc<Connection>, tracer: Option<Tracer>) -> Self {
        Reader { name: "stdin", ..Reader::new(conn, tracer) }
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    fn read_now(&mut self, size: usize) -> StreamResult<Bytes> {
        if matches!(self.state, ReadState::Closed) || self.conn.read_is_shut() {
            return Err(StreamError::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = BytesMut::with_capacity(size.min(MAX_CHUNK));
        match recv(self.conn.stream(), &mut buf) {
            Ok(0) => {
                self.state = ReadState::Closed;
                Err(StreamError::Closed)
            }
            Ok(n) => {
                // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(n) };
                self.conn.touch();
                METRICS.received_bytes.inc_by(n as u64);
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => {
                self.state = ReadState::Closed;
                self.conn.failed();
                Err(StreamError::LastOperationFailed(e.into()))
            }
        }
    }
}

/// One recv() into `buf`'s spare room. When it fills less than that, the
/// socket is drained: the async runtime forgets that it was readable, so
/// the next read costs no system call (tokio does the same for its own
/// reads; `try_read` would keep the readiness until a read fails).
fn recv(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let room = buf.capacity();
    let mut short = None;
    let result = stream.try_io(Interest::READABLE, || {
        let n = SockRef::from(stream).recv(buf.spare_capacity_mut())?;
        if n > 0 && n < room {
            short = Some(n);
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (_, Some(n)) => Ok(n),
        (result, None) => result,
    }
}

#[async_trait::async_trait]
impl InputStream for Reader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let result = self.read_now(size);
        if let Some(tracer) = &self.tracer {
            tracer.recv((self.name, "read"), size, read_outcome(&result));
        }
        result
    }

    /// Waits for at least one byte (or the end), then reads: one trace line.
    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        let result = loop {
            self.ready().await;
            match self.read_now(size) {
                Ok(bytes) if bytes.is_empty() && size > 0 => continue,
                result => break result,
            }
        };
        if let Some(tracer) = &self.tracer {
            tracer.recv((self.name, "blocking-read"), size, read_outcome(&result));
        }
        result
    }
}

fn read_outcome(result: &StreamResult<Bytes>) -> Result<&[u8], StreamEnd<'_>> {
    match result {
        Ok(bytes) => Ok(bytes),
        Err(StreamError::Closed) => Err(StreamEnd::Closed),
        Err(StreamError::LastOperationFailed(e)) => Err(StreamEnd::Failed(e)),
        Err(StreamError::Trap(e)) => Err(StreamEnd::Failed(e)),
    }
}

#[async_trait::async_trait]
impl Pollable for Reader {
    async fn ready(&mut self) {
        if matches!(self.state, ReadState::Closed) || self.conn.read_is_shut() {
            return;
        }
        // An error counts as ready: the read that follows reports it.
        let _ = self.conn.stream().readable().await;
    }
}

/// The output stream: a handle on its connection's sending side. The
/// guest's `write` reaches the sending side without it (`send.rs`), so
/// its state lives in the connection.
pub struct Writer {
    conn: Held,
    tracer: Option<Tracer>,
    /// What the trace calls it: `output-stream`, or `stdout`.
    name: &'static str,
    /// Dropping it ends the sending side (a socket's output stream); a
    /// stdout handle, one of many the guest opens, does not.
    shuts_when_dropped: bool,
}

/// The guest's `write` on one of the host's streams (`send.rs` passes the
/// bytes where they lie in the guest's memory), traced.
pub fn write(conn: &Arc<Connection>, tracer: Option<Tracer>, bytes: &[u8]) -> StreamResult<()> {
    write_named(conn, (tracer, "output-stream"), bytes)
}

fn write_named(
    conn: &Arc<Connection>,
    (tracer, name): (Option<Tracer>, &str),
    bytes: &[u8],
) -> StreamResult<()> {
    let shown = tracer.map(|t| t.bytes(bytes));
    let result = conn.write_now(bytes);
    if let Some(tracer) = tracer {
        let outcome = write_outcome(&result);
        tracer.send((name, "write"), bytes.len(), shown.unwrap_or_default(), outcome);
    }
    result
}

impl Writer {
    pub fn new(conn: &Arc<Connection>, tracer: Option<Tracer>) -> Self {
        let conn = Held::new(conn);
        Writer { conn, tracer, name: "output-stream", shuts_when_dropped: true }
    }

    /// A client's connection as an instance's stdout (`--per-client`).
    pub fn stdout(conn: &Arc<Connection>, tracer: Option<Tracer>) -> Self {
        let conn = Held::new(conn);
        Writer { conn, tracer, name: "stdout", shuts_when_dropped: false }
    }

    async fn write_all_now(&mut self, mut bytes: Bytes) -> StreamResult<()> {
        while !bytes.is_empty() {
            let permit = self.write_ready().await?;
            self.conn.write_now(&bytes.split_to(permit.min(bytes.len())))?;
        }
        // A stream the peer closed meanwhile is not a failure of this call.
        match self.conn.flush_now() {
            Ok(()) | Err(StreamError::Closed) => {}
            Err(e) => return Err(e),
        }
        match self.write_ready().await {
            Ok(_) | Err(StreamError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for Writer {
    /// Reached by wasmtime-wasi-io's `splice`; the guest's own `write`
    /// comes through `send.rs`.
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        write_named(&self.conn, (self.tracer, self.name), &bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        let result = self.conn.flush_now();
        if let Some(tracer) = &self.tracer {
            tracer.flush(self.name, write_outcome(&result));
        }
        result
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let result = self.conn.check_write_now();
        if let Some(tracer) = &self.tracer {
            let room = write_outcome(&result).map(|()| *result.as_ref().unwrap_or(&0));
            tracer.check_write(self.name, room);
        }
        result
    }

    /// Waits until the stream takes more bytes (the wait inside
    /// blocking-flush, say): not a call of the guest's, so not traced.
    async fn write_ready(&mut self) -> StreamResult<usize> {
        loop {
            self.ready().await;
            match self.conn.check_write_now()? {
                0 => continue,
                n => return Ok(n),
            }
        }
    }

    /// send() of up to 4096 bytes, all of it, then a flush: one trace line.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let (len, shown) = (bytes.len(), self.tracer.as_ref().map(|t| t.bytes(&bytes)));
        let result = self.write_all_now(bytes).await;
        if let Some(tracer) = &self.tracer {
            let outcome = write_outcome(&result);
            let call = (self.name, "blocking-write-and-flush");
            tracer.send(call, len, shown.unwrap_or_default(), outcome);
        }
        result
    }
}

fn write_outcome<T>(result: &StreamResult<T>) -> Result<(), StreamEnd<'_>> {
    match result {
        Ok(_) => Ok(()),
        Err(StreamError::Closed) => Err(StreamEnd::Closed),
        Err(StreamError::LastOperationFailed(e) | StreamError::Trap(e)) => {
            Err(StreamEnd::Failed(e))
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {
        self.conn.writable().await;
    }
}

impl Drop for Writer {
    /// Dropping the output stream ends the sending side, as shutdown(send)
    /// does: the FIN follows whatever is still being sent.
    fn drop(&mut self) {
        if self.shuts_when_dropped {
            self.conn.shut_write();
        }
    }
}
