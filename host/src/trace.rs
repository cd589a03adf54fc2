//! `--trace`: the guest's socket calls, as they happen, in the words of a
//! WinSock program next to the wasi:sockets function each really was, with
//! its result and the host's policy decision.
//!
//! ```text
//! socket()                       = tcp-create-socket.create-tcp-socket(ipv4) -> tcp-socket#1
//! bind(0.0.0.0:9000)             = tcp-socket.start-bind(0.0.0.0:9000) -> ok [policy: allowed]
//! accept() -> 127.0.0.1:10919    = tcp-socket.accept -> tcp-socket#5, input-stream#6, output-stream#7
//! recv(512) -> 5 bytes           = input-stream.read(512) -> 5 bytes
//! ```
//!
//! This module only formats what it is told; the sockets layer
//! (`sockets/`) tells it, from the one place each call is implemented.
//! Without `--trace` nothing here runs.

use std::cell::Cell;
use std::fmt::Display;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;

/// Bytes shown per read or write with `--trace-data`.
const SHOWN_BYTES: usize = 64;

/// What `--trace` shows; cheap to copy into every socket and stream.
#[derive(Clone, Copy)]
pub struct Tracer {
    /// `--trace-data`: show byte contents too (escaped, truncated).
    data: bool,
}

/// How a stream call ended when it did not return data.
pub enum StreamEnd<'a> {
    Closed,
    Failed(&'a dyn Display),
}

thread_local! {
    /// The wasi:io function being run, when it is built on others inside
    /// wasmtime-wasi-io (blocking-flush is a flush, then a wait): the trace
    /// names it.
    static CALLING: Cell<Option<&'static str>> = const { Cell::new(None) };
}

impl Tracer {
    pub fn new(data: bool) -> Self {
        Tracer { data }
    }

    /// One trace line: the WinSock call, then what it really was.
    pub fn line(&self, winsock: impl Display, wasi: impl Display) {
        let winsock = winsock.to_string();
        tracing::info!(event = "trace", winsock = %winsock, wasi = %wasi, "trace: {winsock:<30} = {wasi}");
    }

    /// The bytes of a read or write, escaped and cut short, with
    /// `--trace-data`; nothing otherwise.
    pub fn bytes(&self, bytes: &[u8]) -> String {
        if !self.data {
            return String::new();
        }
        let mut shown = format!(" \"{}\"", bytes[..bytes.len().min(SHOWN_BYTES)].escape_ascii());
        if bytes.len() > SHOWN_BYTES {
            shown += "...";
        }
        shown
    }

    /// recv(): a read (or blocking-read) of up to `len` bytes from
    /// `stream` (`input-stream`, or `stdin` for a client's connection).
    pub fn recv(
        &self,
        (stream, function): (&str, &str),
        len: usize,
        outcome: Result<&[u8], StreamEnd<'_>>,
    ) {
        let (winsock, wasi) = match outcome {
            Ok([]) => ("would block".into(), "0 bytes (nothing yet: wait on the pollable)".into()),
            Ok(bytes) => (
                format!("{} bytes", bytes.len()),
                format!("{} bytes{}", bytes.len(), self.bytes(bytes)),
            ),
            Err(StreamEnd::Closed) => ("0 (the client closed)".into(), "closed".into()),
            Err(StreamEnd::Failed(e)) => ("SOCKET_ERROR".into(), format!("failed: {e}")),
        };
        self.line(
            format!("recv({len}) -> {winsock}"),
            format!("{stream}.{function}({len}) -> {wasi}"),
        );
    }

    /// send(): a write (or blocking-write-and-flush) of `len` bytes to
    /// `stream` (`output-stream`, or `stdout`; `shown` from [`Tracer::bytes`]).
    pub fn send(
        &self,
        (stream, function): (&str, &str),
        len: usize,
        shown: String,
        outcome: Result<(), StreamEnd<'_>>,
    ) {
        let (sent, wasi) = match outcome {
            Ok(()) => (len.to_string(), "ok".to_string()),
            Err(end) => ("SOCKET_ERROR".to_string(), stream_end(end)),
        };
        self.line(
            format!("send({len}) -> {sent}"),
            format!("{stream}.{function}({len} bytes) -> {wasi}{shown}"),
        );
    }

    pub fn check_write(&self, stream: &str, outcome: Result<usize, StreamEnd<'_>>) {
        let room = match outcome {
            Ok(0) => "0 (the send buffer is full, or a write is still going out: wait)".into(),
            Ok(n) => format!("{n} (send at most this much)"),
            Err(end) => stream_end(end),
        };
        self.line("", format!("{stream}.check-write -> {room}"));
    }

    pub fn flush(&self, stream: &str, outcome: Result<(), StreamEnd<'_>>) {
        let function = calling("flush");
        let done = match outcome {
            Ok(()) => "ok (everything written is with the system)".to_string(),
            Err(end) => stream_end(end),
        };
        self.line("", format!("{stream}.{function} -> {done}"));
    }

    /// WSAPoll(): a wait on `count` pollables; `ready` are their indices.
    pub fn poll(&self, count: usize, ready: &[u32]) {
        self.line(
            format!("WSAPoll({count} entries) -> {}", ready.len()),
            format!("poll({count} pollables) -> ready {ready:?}"),
        );
    }
}

impl Tracer {
    /// The wait inside a blocking call (accept, say): `pollable.block`.
    pub fn block(&self) {
        self.line("(waits)", "pollable.block -> ready");
    }
}

/// Runs `f` with `function` as the name the stream calls inside it trace.
pub fn calling_as<T>(function: &'static str, f: impl FnOnce() -> T) -> T {
    let before = CALLING.with(|c| c.replace(Some(function)));
    let result = f();
    CALLING.with(|c| c.set(before));
    result
}

fn calling(plain: &'static str) -> &'static str {
    CALLING.with(|c| c.get()).unwrap_or(plain)
}

fn stream_end(end: StreamEnd<'_>) -> String {
    match end {
        StreamEnd::Closed => "closed".to_string(),
        StreamEnd::Failed(e) => format!("failed: {e}"),
    }
}

/// A socket call's result as the trace shows it.
pub fn outcome<T>(result: &Result<T, ErrorCode>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(ErrorCode::WouldBlock) => "would-block (not yet: wait on the pollable)".to_string(),
        Err(e) => format!("error {}", e.name()),
    }
}

/// The policy's part in a call that the grants decide.
pub fn policy<T>(result: &Result<T, ErrorCode>) -> &'static str {
    match result {
        Err(ErrorCode::AccessDenied) => " [policy: denied]",
        Ok(_) => " [policy: allowed]",
        Err(_) => "",
    }
}
