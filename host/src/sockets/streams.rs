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

use super::connection::{Connection, Held, WriteState};
use crate::metrics::METRICS;
use crate::trace::{StreamEnd, Tracer};
use bytes::{Bytes, BytesMut};
use socket2::SockRef;
use std::future::{poll_fn, Future};
use std::io::ErrorKind;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::net::TcpStream;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most one read returns and one check-write grants.
pub use crate::ledger::MAX_CHUNK;

impl Connection {
    /// Readable, or at its end: a read would not answer "nothing yet".
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_shut.load(SeqCst) {
            return Poll::Ready(());
        }
        self.stream.poll_read_ready(cx).map(|_| ())
    }

    /// Writable (once a background send, if any, is done).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.sending.load(SeqCst) {
            *self.when_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.sending.load(SeqCst) {
                return Poll::Pending;
            }
        }
        if self.write_shut.load(SeqCst) {
            return Poll::Ready(());
        }
        self.stream.poll_write_ready(cx).map(|_| ())
    }
}

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
        if matches!(self.state, ReadState::Closed) || self.conn.read_shut.load(SeqCst) {
            return Err(StreamError::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = BytesMut::with_capacity(size.min(MAX_CHUNK));
        match recv(&self.conn.stream, &mut buf) {
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
        if matches!(self.state, ReadState::Closed) || self.conn.read_shut.load(SeqCst) {
            return;
        }
        // An error counts as ready: the read that follows reports it.
        let _ = self.conn.stream.readable().await;
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

impl WriteState {
    /// Settles a finished background send; Pending while it runs.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let WriteState::Sending(task) = self {
            let outcome = match std::pin::Pin::new(task).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(outcome)) => outcome,
                Poll::Ready(Err(join)) => Err(std::io::Error::other(join)),
            };
            *self = match outcome {
                Ok(()) => WriteState::Ready { permit: 0 },
                Err(e) => WriteState::Failed(e),
            };
        }
        Poll::Ready(())
    }

    /// The error to report now, if the stream can no longer be written.
    fn check_open(&mut self, conn: &Connection) -> StreamResult<()> {
        let _ = self.poll_sent(&mut noop_context());
        if conn.write_shut.load(SeqCst) {
            *self = WriteState::Closed;
        }
        match std::mem::replace(self, WriteState::Closed) {
            WriteState::Failed(e) => Err(failure(e)),
            WriteState::Closed => Err(StreamError::Closed),
            open => {
                *self = open;
                Ok(())
            }
        }
    }
}

impl Connection {
    fn output(&self) -> MutexGuard<'_, WriteState> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_write_now(&self) -> StreamResult<usize> {
        let mut state = self.output();
        state.check_open(self)?;
        let WriteState::Ready { permit } = &mut *state else { return Ok(0) };
        let writable = self.stream.poll_write_ready(&mut noop_context()).is_ready();
        *permit = if writable { MAX_CHUNK } else { 0 };
        Ok(*permit)
    }

    /// send() of `bytes`, at once; what the system does not take is copied
    /// for a background task to send.
    fn write_now(self: &Arc<Self>, bytes: &[u8]) -> StreamResult<()> {
        let mut state = self.output();
        state.check_open(self)?;
        match &mut *state {
            WriteState::Ready { permit } if bytes.len() <= *permit => *permit = 0,
            _ => return Err(StreamError::trap("write of more bytes than check-write allowed")),
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let rest = match self.stream.try_write(bytes) {
            Ok(n) if n == bytes.len() => {
                self.touch();
                METRICS.sent_bytes.inc_by(n as u64);
                return Ok(());
            }
            Ok(n) => {
                self.touch();
                METRICS.sent_bytes.inc_by(n as u64);
                &bytes[n..]
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => bytes,
            Err(e) => {
                // The spec: after a failure the stream is closed.
                *state = WriteState::Closed;
                self.failed();
                return Err(failure(e));
            }
        };
        *state = WriteState::Sending(self.send_in_background(Bytes::copy_from_slice(rest)));
        Ok(())
    }

    /// Bytes go to the system as they are written: a flush has nothing to
    /// hurry, only an error to report.
    fn flush_now(&self) -> StreamResult<()> {
        self.output().check_open(self)
    }
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

/// A broken pipe means the peer is gone: the stream is simply closed. Any
/// other failure is reported with the system's words (`network-error-code`
/// turns it back into an error code).
fn failure(e: std::io::Error) -> StreamError {
    match e.kind() {
        ErrorKind::BrokenPipe => StreamError::Closed,
        _ => StreamError::LastOperationFailed(e.into()),
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
        poll_fn(|cx| self.conn.output().poll_sent(cx)).await;
        let open = matches!(*self.conn.output(), WriteState::Ready { .. });
        if open && !self.conn.write_shut.load(SeqCst) {
            let _ = self.conn.stream.writable().await;
        }
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

fn noop_context() -> Context<'static> {
    Context::from_waker(std::task::Waker::noop())
}
