//! A client's connection as an instance's stdin and stdout, for
//! `--per-client`: what inetd does with descriptors 0 and 1, as wasi:io
//! streams over one `TcpStream`.
//!
//! Every stdin or stdout handle the guest opens (a Rust program opens one
//! per call) shares the connection, and so does the task serving the
//! client, which flushes what is left once the instance ends
//! (`per_client/client.rs`).
//! The streams ask the system directly, on the instance's own task: a read
//! is one recv(), a write one send(), and only what the system does not
//! take at once waits here, for the stream's pollable to send it.

use super::connection::since_epoch;
use crate::log_limit::Kind;
use crate::metrics::{self, Closed, METRICS};
use crate::trace::Tracer;
use bytes::{Bytes, BytesMut};
use socket2::SockRef;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most one read returns, and what check-write grants.
pub const CHUNK: usize = 64 * 1024;

/// One client's connection, for the instance serving it.
#[derive(Clone)]
pub struct Connection(Arc<Shared>);

struct Shared {
    stream: Arc<TcpStream>,
    tracer: Option<Tracer>,
    /// What the guest wrote and the system has not taken yet.
    unsent: Mutex<Unsent>,
    /// When a byte last moved (`--idle-timeout`), as `since_epoch` counts.
    last_active: AtomicU64,
}

#[derive(Default)]
struct Unsent {
    bytes: BytesMut,
    /// A send failed (the client reset, say): every later write fails.
    failed: bool,
}

impl Connection {
    pub fn new(stream: &Arc<TcpStream>, tracer: Option<Tracer>) -> Connection {
        let (unsent, last_active) = (Mutex::new(Unsent::default()), AtomicU64::new(since_epoch()));
        Connection(Arc::new(Shared { stream: Arc::clone(stream), tracer, unsent, last_active }))
    }

    /// `--idle-timeout`: returns once nothing has been received or sent for
    /// `timeout`, having shut the connection both ways, as the sockets do:
    /// the guest reads the end of its stdin, and its writes fail.
    pub async fn close_when_idle(&self, timeout: Duration, peer: SocketAddr) {
        static CLOSED_IDLE: Kind = Kind::info("idle clients closed");
        loop {
            let last = self.0.last_active.load(SeqCst);
            let idle = Duration::from_millis(since_epoch().saturating_sub(last));
            if idle >= timeout {
                break;
            }
            tokio::time::sleep(timeout - idle).await;
        }
        metrics::closed(Closed::IdleTimeout);
        let _ = SockRef::from(&*self.0.stream).shutdown(Shutdown::Both);
        if CLOSED_IDLE.admit() {
            tracing::info!(
                event = "idle",
                "closed the connection of {peer}: nothing received or sent for {timeout:?} \
                 (--idle-timeout)"
            );
        }
    }
}

/// A stdin handle.
struct Input(Arc<Shared>);

/// A stdout handle.
struct Output(Arc<Shared>);

impl IsTerminal for Connection {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for Connection {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(Input(Arc::clone(&self.0)))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }
}

impl StdoutStream for Connection {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Output(Arc::clone(&self.0)))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

/// stdin: recv() on the connection.
#[async_trait::async_trait]
impl InputStream for Input {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let Shared { stream, tracer, .. } = &*self.0;
        let mut buf = BytesMut::with_capacity(size.min(CHUNK));
        let result = match stream.try_read_buf(&mut buf) {
            Ok(0) if size > 0 => Err(StreamError::Closed),
            Ok(n) => {
                METRICS.received_bytes.inc_by(n as u64);
                self.0.last_active.store(since_epoch(), SeqCst);
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(StreamError::LastOperationFailed(e.into())),
        };
        if let Some(tracer) = tracer {
            let outcome = match &result {
                Ok(bytes) if bytes.is_empty() => "0 bytes (nothing yet: wait)".into(),
                Ok(bytes) => format!("{} bytes{}", bytes.len(), tracer.bytes(bytes)),
                Err(StreamError::Closed) => "closed (the client closed its side)".into(),
                Err(e) => format!("failed: {e}"),
            };
            tracer.line(format!("recv({size})"), format!("stdin.read({size}) -> {outcome}"));
        }
        result
    }
}

/// Ready once the connection has something to read, or has ended.
#[async_trait::async_trait]
impl Pollable for Input {
    async fn ready(&mut self) {
        let _ = self.0.stream.readable().await;
    }
}

/// Ready once nothing waits to be sent (or sending failed).
#[async_trait::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {
        loop {
            {
                let mut unsent = self.0.unsent.lock().unwrap_or_else(|e| e.into_inner());
                self.0.send_unsent(&mut unsent);
                if unsent.bytes.is_empty() || unsent.failed {
                    return;
                }
            }
            let _ = self.0.stream.writable().await;
        }
    }
}

/// stdout: send() on the connection.
#[async_trait::async_trait]
impl OutputStream for Output {
    fn check_write(&mut self) -> StreamResult<usize> {
        let mut unsent = self.0.unsent.lock().unwrap_or_else(|e| e.into_inner());
        self.0.send_unsent(&mut unsent);
        match (unsent.failed, unsent.bytes.is_empty()) {
            (true, _) => Err(send_failed()),
            (false, true) => Ok(CHUNK),
            (false, false) => Ok(0),
        }
    }

    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut unsent = self.0.unsent.lock().unwrap_or_else(|e| e.into_inner());
        if unsent.failed {
            return Err(send_failed());
        }
        unsent.bytes.extend_from_slice(&bytes);
        self.0.send_unsent(&mut unsent);
        if let Some(tracer) = self.0.tracer {
            let outcome = if unsent.failed { "failed" } else { "ok" };
            let len = bytes.len();
            let shown = tracer.bytes(&bytes);
            tracer.line(
                format!("send({len})"),
                format!("stdout.write({len} bytes) -> {outcome}{shown}"),
            );
        }
        match unsent.failed {
            true => Err(send_failed()),
            false => Ok(()),
        }
    }

    /// What was written is with the system, or will be once the stream's
    /// pollable is ready (check-write answers 0 until then).
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
}

impl Shared {
    /// Hands the system what it takes now of what waits.
    fn send_unsent(&self, unsent: &mut Unsent) {
        while !unsent.bytes.is_empty() && !unsent.failed {
            match self.stream.try_write(&unsent.bytes) {
                Ok(n) => {
                    METRICS.sent_bytes.inc_by(n as u64);
                    self.last_active.store(since_epoch(), SeqCst);
                    let _ = unsent.bytes.split_to(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => unsent.failed = true,
            }
        }
    }
}

/// A write after a send failed (the client reset the connection, say).
fn send_failed() -> StreamError {
    StreamError::LastOperationFailed(std::io::Error::from(ErrorKind::BrokenPipe).into())
}
