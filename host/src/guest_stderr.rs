//! The guest's stderr, line by line, as the host's own log lines
//! (`event = "guest-stderr"`, with the instance's number): one JSON object
//! each with `--log-format json`, so that stderr holds nothing else, and
//! under the same rate limit as every line a guest can write at will. (Its
//! stdout stays its own, passed through as it is written.)
//!
//! What a guest can make the host hold here is small and bounded: every
//! stderr stream it opens shares its instance's one line buffer, a line
//! longer than [`MAX_LINE`] is cut there, and control characters are
//! escaped, so that no line can pass for another or rewrite the terminal.

use crate::log_limit::Kind;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept whole.
const MAX_LINE: usize = 4096;

static LINES: Kind = Kind::info("lines of the guests' stderr");

/// One instance's stderr: every stream the guest opens on it writes to
/// the same line buffer.
pub struct GuestStderr(Arc<Mutex<Lines>>);

impl GuestStderr {
    pub fn new(instance: u64) -> GuestStderr {
        GuestStderr(Arc::new(Mutex::new(Lines { instance, partial: Vec::new() })))
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    /// The WASI 0.2 stream: takes every write at once, no task, no buffer
    /// of its own.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Stream(Arc::clone(&self.0)))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct Stream(Arc<Mutex<Lines>>);

#[async_trait::async_trait]
impl OutputStream for Stream {
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
impl Pollable for Stream {
    async fn ready(&mut self) {}
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
            let (instance, line) = (self.instance, shown(&line));
            tracing::info!(event = "guest-stderr", instance, "{line}");
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
        let mut lines = Lines { instance: 1, partial: Vec::new() };
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
