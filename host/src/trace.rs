//! `--trace`: every socket-level call the guest makes, as it happens, in
//! the words of the WinSock seed, next to the wasi:sockets function it
//! really was, its result, and the host's policy decision.
//!
//! ```text
//! socket()                       = tcp-create-socket.create-tcp-socket(ipv4) -> tcp-socket#1
//! bind(0.0.0.0:9000)             = tcp-socket.start-bind(0.0.0.0:9000) -> ok [policy: allowed]
//! accept() -> 127.0.0.1:10919    = tcp-socket.accept -> tcp-socket#5, input-stream#6, output-stream#7
//! recv(512) -> 5 bytes           = input-stream.blocking-read(512) -> 5 bytes
//! ```
//!
//! Tracing replaces these imports with wrappers that log and delegate to
//! wasmtime-wasi; without `--trace` they are not linked at all, so the
//! server pays nothing for it. Stream calls are traced only on streams that
//! came from `accept`, not on stdout.

use crate::sandbox::GuestState;
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::io::poll::Host as PollHost;
use wasmtime_wasi::p2::bindings::io::streams::{
    Host as StreamsHost, HostInputStream, HostOutputStream, StreamError as WitStreamError,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, SocketError, StreamError, TcpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsView;

/// Bytes shown per read or write with `--trace-data`.
const SHOWN_BYTES: usize = 64;

/// What the trace remembers about the guest's sockets.
pub struct Tracer {
    /// Show byte contents too (escaped, truncated).
    data: bool,
    /// Streams of accepted clients (their reps): the only ones traced.
    streams: HashSet<u32>,
    /// Accepted sockets: socket rep -> its (input, output) stream reps.
    sockets: HashMap<u32, (u32, u32)>,
}

impl Tracer {
    pub fn new(data: bool) -> Self {
        Tracer { data, streams: HashSet::new(), sockets: HashMap::new() }
    }

    fn is_socket_stream(&self, rep: u32) -> bool {
        self.streams.contains(&rep)
    }

    fn bytes(&self, bytes: &[u8]) -> String {
        if !self.data {
            return String::new();
        }
        let mut shown = format!(" \"{}\"", bytes[..bytes.len().min(SHOWN_BYTES)].escape_ascii());
        if bytes.len() > SHOWN_BYTES {
            shown += "...";
        }
        shown
    }
}

/// One trace line: the seed's call, then what it really was.
pub fn line(seed: impl Display, wasi: impl Display) {
    let seed = seed.to_string();
    tracing::info!(event = "trace", seed = %seed, wasi = %wasi, "trace: {seed:<30} = {wasi}");
}

/// The result of a socket call as the guest sees it: a trap stays a trap.
fn socket_result<T>(result: Result<T, SocketError>) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(e.downcast()?)),
    }
}

fn stream_result<T>(
    table: &mut wasmtime::component::ResourceTable,
    result: Result<T, StreamError>,
) -> wasmtime::Result<Result<T, WitStreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(StreamsHost::convert_stream_error(table, e)?)),
    }
}

fn outcome<T>(result: &Result<T, ErrorCode>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(ErrorCode::WouldBlock) => "would-block (not yet: wait on the pollable)".to_string(),
        Err(e) => format!("error {}", e.name()),
    }
}

fn policy<T>(result: &Result<T, ErrorCode>) -> &'static str {
    match result {
        Err(ErrorCode::AccessDenied) => " [policy: denied]",
        Ok(_) => " [policy: allowed]",
        Err(_) => "",
    }
}

fn stream_outcome<T>(result: &Result<T, WitStreamError>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(WitStreamError::Closed) => "closed".to_string(),
        Err(WitStreamError::LastOperationFailed(_)) => "failed".to_string(),
    }
}

fn show_addr(addr: &IpSocketAddress) -> String {
    match addr {
        IpSocketAddress::Ipv4(a) => {
            let (a0, a1, a2, a3) = a.address;
            format!("{a0}.{a1}.{a2}.{a3}:{}", a.port)
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            let ip = std::net::Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7);
            format!("[{ip}]:{}", a.port)
        }
    }
}

type Store<'a> = StoreContextMut<'a, GuestState>;

pub fn add_to_linker(linker: &mut Linker<GuestState>) -> Result<()> {
    let mut tcp = linker.instance("wasi:sockets/tcp@0.2.12")?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: Store,
         (this, network, addr): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let shown = show_addr(&addr);
                let result =
                    HostTcpSocket::start_bind(&mut store.data_mut().sockets(), this, network, addr)
                        .await;
                let result = socket_result(result)?;
                line(
                    format!("bind({shown})"),
                    format!(
                        "tcp-socket.start-bind({shown}) -> {}{}",
                        outcome(&result, |_| "ok".into()),
                        policy(&result)
                    ),
                );
                Ok((result,))
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-bind",
        |mut store: Store, (this,): (Resource<TcpSocket>,)| {
            let result =
                socket_result(HostTcpSocket::finish_bind(&mut store.data_mut().sockets(), this))?;
            line(
                "",
                format!("tcp-socket.finish-bind -> {}", outcome(&result, |_| "ok: bound".into())),
            );
            Ok((result,))
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.set-listen-backlog-size",
        |mut store: Store, (this, size): (Resource<TcpSocket>, u64)| {
            let result = socket_result(HostTcpSocket::set_listen_backlog_size(
                &mut store.data_mut().sockets(),
                this,
                size,
            ))?;
            line(
                format!("listen(backlog={size})"),
                format!(
                    "tcp-socket.set-listen-backlog-size({size}) -> {}",
                    outcome(&result, |_| "ok".into())
                ),
            );
            Ok((result,))
        },
    )?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-listen",
        |mut store: Store, (this,): (Resource<TcpSocket>,)| {
            Box::new(async move {
                let result = socket_result(
                    HostTcpSocket::start_listen(&mut store.data_mut().sockets(), this).await,
                )?;
                line(
                    "",
                    format!(
                        "tcp-socket.start-listen -> {}{}",
                        outcome(&result, |_| "ok".into()),
                        policy(&result)
                    ),
                );
                Ok((result,))
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-listen",
        |mut store: Store, (this,): (Resource<TcpSocket>,)| {
            let result =
                socket_result(HostTcpSocket::finish_listen(&mut store.data_mut().sockets(), this))?;
            line(
                "",
                format!(
                    "tcp-socket.finish-listen -> {}",
                    outcome(&result, |_| "ok: listening".into())
                ),
            );
            Ok((result,))
        },
    )?;
    tcp.func_wrap("[method]tcp-socket.accept", |mut store: Store, (this,): (Resource<TcpSocket>,)| {
        let state = store.data_mut();
        let result = socket_result(HostTcpSocket::accept(&mut state.sockets(), this))?;
        let Ok((socket, input, output)) = &result else {
            line("accept()", format!("tcp-socket.accept -> {}", outcome(&result, |_| String::new())));
            return Ok((result,));
        };
        let borrowed = Resource::<TcpSocket>::new_borrow(socket.rep());
        let peer = match HostTcpSocket::remote_address(&mut state.sockets(), borrowed) {
            Ok(addr) => show_addr(&addr),
            Err(_) => "(already gone)".to_string(),
        };
        let (sock, rx, tx) = (socket.rep(), input.rep(), output.rep());
        if let Some(tracer) = &mut state.tracer {
            tracer.streams.extend([rx, tx]);
            tracer.sockets.insert(sock, (rx, tx));
        }
        line(
            format!("accept() -> {peer}"),
            format!("tcp-socket.accept -> tcp-socket#{sock}, input-stream#{rx}, output-stream#{tx} [policy: client allowed]"),
        );
        Ok((result,))
    })?;

    let mut streams = linker.instance("wasi:io/streams@0.2.12")?;
    streams.func_wrap(
        "[method]input-stream.read",
        |mut store: Store, (this, len): (Resource<DynInputStream>, u64)| {
            let rep = this.rep();
            let state = store.data_mut();
            let result = HostInputStream::read(&mut state.table, this, len);
            let result = stream_result(&mut state.table, result)?;
            trace_read(state, rep, "read", len, &result);
            Ok((result,))
        },
    )?;
    streams.func_wrap_async(
        "[method]input-stream.blocking-read",
        |mut store: Store, (this, len): (Resource<DynInputStream>, u64)| {
            Box::new(async move {
                let rep = this.rep();
                let state = store.data_mut();
                let result = HostInputStream::blocking_read(&mut state.table, this, len).await;
                let result = stream_result(&mut state.table, result)?;
                trace_read(state, rep, "blocking-read", len, &result);
                Ok((result,))
            })
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.check-write",
        |mut store: Store, (this,): (Resource<DynOutputStream>,)| {
            let rep = this.rep();
            let state = store.data_mut();
            let result = HostOutputStream::check_write(&mut state.table, this);
            let result = stream_result(&mut state.table, result)?;
            if is_socket_stream(state, rep) {
                let room = stream_outcome(&result, |n| match n {
                    0 => "0 (the send buffer is full, or a write is still going out: wait)"
                        .to_string(),
                    n => format!("{n} (send at most this much)"),
                });
                line("", format!("output-stream.check-write -> {room}"));
            }
            Ok((result,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.write",
        |mut store: Store, (this, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let rep = this.rep();
            let (len, shown) = (
                bytes.len(),
                store.data().tracer.as_ref().map(|t| t.bytes(&bytes)).unwrap_or_default(),
            );
            let state = store.data_mut();
            let result = HostOutputStream::write(&mut state.table, this, bytes);
            let result = stream_result(&mut state.table, result)?;
            if is_socket_stream(state, rep) {
                let sent = stream_outcome(&result, |()| len.to_string());
                line(
                    format!("send({len}) -> {sent}"),
                    format!(
                        "output-stream.write({len} bytes) -> {}{shown}",
                        stream_outcome(&result, |()| "ok".into())
                    ),
                );
            }
            Ok((result,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.flush",
        |mut store: Store, (this,): (Resource<DynOutputStream>,)| {
            let rep = this.rep();
            let state = store.data_mut();
            let result = HostOutputStream::flush(&mut state.table, this);
            let result = stream_result(&mut state.table, result)?;
            if is_socket_stream(state, rep) {
                line(
                    "",
                    format!(
                        "output-stream.flush -> {}",
                        stream_outcome(&result, |()| "ok (flush started)".into())
                    ),
                );
            }
            Ok((result,))
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-flush",
        |mut store: Store, (this,): (Resource<DynOutputStream>,)| {
            Box::new(async move {
                let rep = this.rep();
                let state = store.data_mut();
                let result = HostOutputStream::blocking_flush(&mut state.table, this).await;
                let result = stream_result(&mut state.table, result)?;
                if is_socket_stream(state, rep) {
                    line(
                        "",
                        format!(
                            "output-stream.blocking-flush -> {}",
                            stream_outcome(&result, |()| "ok (all handed to the system)".into())
                        ),
                    );
                }
                Ok((result,))
            })
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: Store, (this, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            Box::new(async move {
                let rep = this.rep();
                let (len, shown) = (
                    bytes.len(),
                    store.data().tracer.as_ref().map(|t| t.bytes(&bytes)).unwrap_or_default(),
                );
                let state = store.data_mut();
                let result =
                    HostOutputStream::blocking_write_and_flush(&mut state.table, this, bytes).await;
                let result = stream_result(&mut state.table, result)?;
                if is_socket_stream(state, rep) {
                    let sent = stream_outcome(&result, |()| len.to_string());
                    line(
                        format!("send({len}) -> {sent}"),
                        format!(
                            "output-stream.blocking-write-and-flush({len} bytes) -> {}{shown}",
                            stream_outcome(&result, |()| "ok".into())
                        ),
                    );
                }
                Ok((result,))
            })
        },
    )?;

    linker.instance("wasi:io/poll@0.2.12")?.func_wrap_async(
        "poll",
        |mut store: Store, (pollables,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move {
                let count = pollables.len();
                let ready = PollHost::poll(&mut store.data_mut().table, pollables).await?;
                line(
                    format!("WSAPoll({count} sockets) -> {}", ready.len()),
                    format!("poll({count} pollables) -> ready {ready:?}"),
                );
                Ok((ready,))
            })
        },
    )?;
    Ok(())
}

fn is_socket_stream(state: &GuestState, rep: u32) -> bool {
    state.tracer.as_ref().is_some_and(|t| t.is_socket_stream(rep))
}

fn trace_read(
    state: &GuestState,
    rep: u32,
    function: &str,
    len: u64,
    result: &Result<Vec<u8>, WitStreamError>,
) {
    let Some(tracer) = state.tracer.as_ref().filter(|t| t.is_socket_stream(rep)) else { return };
    let (seed, wasi) = match result {
        Ok(bytes) if bytes.is_empty() => {
            ("would block".to_string(), "0 bytes (nothing yet: wait on the pollable)".to_string())
        }
        Ok(bytes) => (
            format!("{} bytes", bytes.len()),
            format!("{} bytes{}", bytes.len(), tracer.bytes(bytes)),
        ),
        Err(WitStreamError::Closed) => ("0 (the client closed)".to_string(), "closed".to_string()),
        Err(WitStreamError::LastOperationFailed(_)) => {
            ("SOCKET_ERROR".to_string(), "failed".to_string())
        }
    };
    line(format!("recv({len}) -> {seed}"), format!("input-stream.{function}({len}) -> {wasi}"));
}

/// socket(): called from the creation wrapper in `sandbox.rs`.
pub fn socket(
    state: &GuestState,
    family: IpAddressFamily,
    result: &Result<Resource<TcpSocket>, ErrorCode>,
) {
    if state.tracer.is_some() {
        let family = match family {
            IpAddressFamily::Ipv4 => "ipv4",
            IpAddressFamily::Ipv6 => "ipv6",
        };
        line(
            "socket()",
            format!(
                "tcp-create-socket.create-tcp-socket({family}) -> {}",
                outcome(result, |s| format!("tcp-socket#{}", s.rep()))
            ),
        );
    }
}

/// closesocket(): called from the socket's destructor in `sandbox.rs`.
pub fn closesocket(state: &mut GuestState, rep: u32) {
    if let Some(tracer) = &mut state.tracer {
        if let Some((rx, tx)) = tracer.sockets.remove(&rep) {
            tracer.streams.remove(&rx);
            tracer.streams.remove(&tx);
        }
        line("closesocket()", format!("[drop] tcp-socket#{rep} (after its streams)"));
    }
}
