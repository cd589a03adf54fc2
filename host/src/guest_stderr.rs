//! The guest's stderr, line by line, as the host's own log lines
//! (`event = "guest-stderr"`, with the instance's number): one JSON object
//! each with `--log-format json`, so that stderr holds nothing else, and
//! under the same rate limit as every line a guest can write at will. (Its
//! stdout stays its own, passed through as it is written.)
//!
//! A line longer than [`MAX_LINE`] is cut there: a guest that never writes
//! a newline cannot make the host buffer without end.

use crate::log_limit::Kind;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept whole.
const MAX_LINE: usize = 4096;

static LINES: Kind = Kind::info("lines of the guests' stderr");

/// Instance `instance`'s stderr.
pub struct GuestStderr {
    pub instance: u64,
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines { instance: self.instance, partial: Vec::new() })
    }
}

/// Collects bytes until a newline, then logs the line.
struct Lines {
    instance: u64,
    partial: Vec<u8>,
}

impl Lines {
    fn take(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.push(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE - self.partial.len();
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            self.emit();
            self.push(&bytes[room..]);
        }
    }

    fn emit(&mut self) {
        let line = std::mem::take(&mut self.partial);
        if !line.is_empty() && LINES.admit() {
            let instance = self.instance;
            let line = String::from_utf8_lossy(&line);
            tracing::info!(event = "guest-stderr", instance, "{line}");
        }
    }
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.partial.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_longest_line() {
        let mut lines = Lines { instance: 1, partial: Vec::new() };
        lines.take(b"one\n\ntw");
        assert_eq!(lines.partial, b"tw");
        lines.take(b"o\n");
        assert!(lines.partial.is_empty());
        lines.take(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.partial.len(), 5);
    }
}
