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
//! stream it opens shares its instance's one line buffer, a line longer
//! than [`MAX_LINE`] is cut there, and control characters are escaped, so
//! that no line can pass for another or rewrite the terminal.

use crate::log_limit::Kind;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept whole.
const MAX_LINE: usize = 4096;

static LINES: Kind = Kind::info("lines of the guests' stderr");

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
        Box::new(Writes(Arc::clone(&self.0)))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct Writes(Arc<Mutex<Lines>>);

#[async_trait::async_trait]
impl OutputStream for Writes {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
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
        if line.is_empty() {
            return;
        }
        let (instance, line) = (self.instance, shown(&line));
        match self.stream {
            Stream::Stdout => crate::output::guest_stdout(instance, &line),
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

/// A line as the log shows it: UTF-8 (invalid bytes replaced), control
/// characters but tab escaped (`\r`, `\u{1b}`).
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.chars().any(|c| c.is_control() && c != '\t') {
        false => text.into_owned(),
        true => text
            .chars()
            .map(|c| match c.is_control() && c != '\t' {
                true => c.escape_debug().to_string(),
                false => c.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_longest_line() {
        let mut lines = Lines { instance: 1, stream: Stream::Stderr, partial: Vec::new() };
        lines.take(b"one\n\ntw");
        assert_eq!(lines.partial, b"tw");
        lines.take(b"o\n");
        assert!(lines.partial.is_empty());
        lines.take(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.partial.len(), 5);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown(b"plain\ttext"), "plain\ttext");
        assert_eq!(shown(b"fake\rWARN \x1b[2Kline"), "fake\\rWARN \\u{1b}[2Kline");
    }
}
