//! A client's connection as an instance's stdin and stdout: what inetd
//! does with descriptors 0 and 1, done with wasmtime-wasi's async stdio
//! streams over the two directions of one `TcpStream`.
//!
//! Both directions share the stream (an `Arc`), and so does the task that
//! serves the client: when the instance ends it can still flush what the
//! guest wrote and close the connection, with a FIN after a clean end or a
//! reset after a trap.

use crate::metrics::METRICS;
use crate::trace::Tracer;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much the guest may write before its stdout waits for the client
/// (wasmtime-wasi's write budget: what `check-write` allows at once).
pub const WRITE_BUDGET: usize = 64 * 1024;

/// One direction of a client's connection.
pub struct Side {
    stream: Arc<TcpStream>,
    tracer: Option<Tracer>,
    /// The instance's span: wasmtime-wasi reads and writes in tasks of its
    /// own, and the trace lines must still name the client.
    span: tracing::Span,
}

impl Side {
    pub fn new(stream: &Arc<TcpStream>, tracer: Option<Tracer>) -> Side {
        Side { stream: Arc::clone(stream), tracer, span: tracing::Span::current() }
    }
}

/// stdin: recv() on the connection.
impl AsyncRead for Side {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    METRICS.received_bytes.inc_by(n as u64);
                    if let Some(tracer) = self.tracer {
                        let _in = self.span.enter();
                        let shown = tracer.bytes(&buf.filled()[buf.filled().len() - n..]);
                        tracer.line(format!("recv() -> {n} bytes"), format!("stdin{shown}"));
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// stdout: send() on the connection.
impl AsyncWrite for Side {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(bytes) {
                Ok(n) => {
                    METRICS.sent_bytes.inc_by(n as u64);
                    if let Some(tracer) = self.tracer {
                        let _in = self.span.enter();
                        let shown = tracer.bytes(&bytes[..n]);
                        tracer.line(
                            format!("send({}) -> {n} bytes", bytes.len()),
                            format!("stdout{shown}"),
                        );
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is kept here: what `try_write` took, the system has.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection closes when the client's task says how (`mod.rs`).
        Poll::Ready(Ok(()))
    }
}
