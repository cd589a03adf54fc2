//! The guest's stdout and stderr, line by line, through the host's own
//! outputs (`output.rs`), which never block serving:
//!
//! - stderr: as lines of the host's log (`event = "guest-stderr"`, with the
//!   instance's number), one JSON object each with `--log-format json`, and
//!   under the same rate limit as every line a guest can write at will;
//! - stdout: on the host's stdout, as written (one JSON object each,
//!   `event = "guest-stdout"`, with `--log-format json`), not rate-limited:
//!   it is the guest's own output.
//!
//! What a guest can make the host hold here is small and bounded: every
//! stream it opens shares its instance's one line buffer; a write may not
//! exceed what `check-write` granted ([`MAX_LINE`] bytes: more is a trap,
//! as the spec says); control characters are escaped (`escape.rs`), so
//! that no line can pass for another or rewrite the terminal, and a line
//! longer than [`MAX_LINE`] bytes once escaped is cut there. Splitting is
//! a loop over bounded pieces, never a recursion on a size the guest
//! chose.

use crate::escape;
use crate::log_limit::{Kind, LogLines};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The longest line kept whole, in bytes as the log shows it (escaped);
/// also what one `check-write` grants.
use crate::ledger::MAX_LINE;

static LINES: Kind = Kind::info(LogLines::GuestStderr, "lines of the guests' stderr");

/// One instance's stdout or stderr: every stream the guest opens on it
/// writes to the same line buffer.
pub struct GuestOutput(Arc<Mutex<Lines>>);

/// Which of the two.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl GuestOutput {
    pub fn stdout(instance: u64) -> GuestOutput {
        GuestOutput::new(instance, Stream::Stdout)
    }

    pub fn stderr(instance: u64) -> GuestOutput {
        GuestOutput::new(instance, Stream::Stderr)
    }

    fn new(instance: u64, stream: Stream) -> GuestOutput {
        GuestOutput(Arc::new(Mutex::new(Lines { instance, stream, partial: Vec::new() })))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    /// The WASI 0.2 stream: takes every write at once, no task, no buffer
    /// of its own.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writes { lines: Arc::clone(&self.0), permit: 0 })
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

/// One stream handle: what its last `check-write` granted.
struct Writes {
    lines: Arc<Mutex<Lines>>,
    permit: usize,
}

#[async_trait::async_trait]
impl OutputStream for Writes {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > self.permit {
            return Err(StreamError::trap("write of more bytes than check-write allowed"));
        }
        self.permit -= bytes.len();
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.permit = MAX_LINE;
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for Writes {
    async fn ready(&mut self) {}
}

/// Collects bytes until a newline, then writes the line out.
struct Lines {
    instance: u64,
    stream: Stream,
    partial: Vec<u8>,
}

impl Lines {
    /// The bytes of one write: each newline ends a line.
    fn take(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.push(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.push(bytes);
    }

    /// Adds to the line under way; a line that reaches [`MAX_LINE`] raw
    /// bytes goes out as it is, and the rest starts the next.
    fn push(&mut self, mut bytes: &[u8]) {
        loop {
            let room = MAX_LINE - self.partial.len();
            let (now, later) = bytes.split_at(bytes.len().min(room));
            self.partial.extend_from_slice(now);
            if later.is_empty() {
                return;
            }
            self.emit();
            bytes = later;
        }
    }

    /// Writes out the line under way: as one line of at most [`MAX_LINE`]
    /// bytes once escaped, or several.
    fn emit(&mut self) {
        let line = std::mem::take(&mut self.partial);
        let mut rest = &line[..];
        while !rest.is_empty() {
            let (shown, used) = escape::escaped_prefix(rest, MAX_LINE);
            self.write_out(&shown);
            rest = &rest[used..];
        }
    }

    fn write_out(&self, line: &str) {
        let instance = self.instance;
        match self.stream {
            Stream::Stdout => crate::output::guest_stdout(instance, line),
            Stream::Stderr if LINES.admit() => {
                tracing::info!(event = "guest-stderr", instance, "{line}")
            }
            Stream::Stderr => {}
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Lines {
        Lines { instance: 1, stream: Stream::Stderr, partial: Vec::new() }
    }

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_longest_line() {
        let mut lines = lines();
        lines.take(b"one\n\ntw");
        assert_eq!(lines.partial, b"tw");
        lines.take(b"o\n");
        assert!(lines.partial.is_empty());
        lines.take(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.partial.len(), 5);
    }

    /// A write far larger than a line (more than check-write grants, as
    /// the stream's own code would see it) is split in a loop: a debug
    /// build's stack survives 100 MiB.
    #[test]
    fn a_huge_write_is_split_without_recursion() {
        let mut lines = lines();
        lines.take(&vec![b'x'; (100 << 20) + 5]);
        assert_eq!(lines.partial.len(), 5);
    }

    #[test]
    fn a_write_beyond_the_permit_traps() {
        let output = GuestOutput::stderr(1);
        let mut stream = output.p2_stream();
        assert!(matches!(stream.write(Bytes::from_static(b"x")), Err(StreamError::Trap(_))));
        assert_eq!(stream.check_write().unwrap(), MAX_LINE);
        stream.write(Bytes::from(vec![b'x'; MAX_LINE])).unwrap();
        assert!(matches!(stream.write(Bytes::from_static(b"x")), Err(StreamError::Trap(_))));
    }
}
