//! The wasi:sockets/tcp contract, checked from inside a guest: every state
//! transition and error code of the 0.2 `tcp` interface, as the WIT and the
//! sockets proposal's state machine give them.
//!
//! Run with a listen grant on 127.0.0.1:0 and [::1]:0 and connect grants
//! for 127.0.0.1:* and [::1]:*; it prints `ok NAME` or `FAIL NAME: why` per check and
//! exits 1 if any failed. With an argument it does one thing instead:
//! `write-over-permit` and `blocking-write-4097` break a rule the spec says
//! traps; `write-stdout` writes to stdout with `write`; `serve-once`
//! accepts one client on LISTEN_ADDR and reports how its input stream ended;
//! `write-after-reset` accepts one, reads a byte, then writes until the
//! output stream fails, and reports that and what the stream says next.

use std::net::{IpAddr, SocketAddr};
use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::{poll, Pollable};
use wasi::io::streams::{InputStream, OutputStream, StreamError};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::ip_name_lookup::resolve_addresses;
use wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, Network,
};
use wasi::sockets::tcp::{ShutdownType, TcpSocket};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

type Check = Result<(), String>;

const V4: IpAddressFamily = IpAddressFamily::Ipv4;
const V6: IpAddressFamily = IpAddressFamily::Ipv6;

fn main() {
    match std::env::args().nth(1).as_deref() {
        None => run_all(),
        Some("write-over-permit") => write_over_permit(),
        Some("blocking-write-4097") => blocking_write_4097(),
        Some("poll-empty") => poll_empty(),
        Some("busy-poll") => busy_poll(),
        Some("write-stdout") => write_stdout(),
        Some("serve-once") => serve_once(),
        Some("write-after-reset") => write_after_reset(),
        Some(other) => panic!("unknown mode {other}"),
    }
}

fn run_all() {
    let net = instance_network();
    type Named = (&'static str, fn(&Network) -> Check);
    let checks: &[Named] = &[
        ("unbound-state", unbound_state),
        ("bind-arguments", bind_arguments),
        ("bind-denied-stays-unbound", bind_denied_stays_unbound),
        ("bind-in-progress", bind_in_progress),
        ("listen-in-progress", listen_in_progress),
        ("listen-denied-closes", listen_denied_closes),
        ("accept-and-connected-state", accept_and_connected_state),
        ("connect-arguments", connect_arguments),
        ("connect-denied-closes", connect_denied_closes),
        ("connect-refused-closes", connect_refused_closes),
        ("connect-in-progress", connect_in_progress),
        ("option-ranges", option_ranges),
        ("option-readback", option_readback),
        ("options-inherited-by-accepted", options_inherited),
        ("backlog-after-listen", backlog_after_listen),
        ("shutdown-send", shutdown_send),
        ("shutdown-receive", shutdown_receive),
        ("end-of-stream-is-closed", end_of_stream_is_closed),
        ("socket-dropped-before-streams", socket_dropped_before_streams),
        ("ipv6", ipv6),
        ("name-lookup-not-granted", name_lookup_not_granted),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check(&net) {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{} checks, {failed} failed", checks.len());
    std::process::exit(i32::from(failed > 0));
}

// ---- helpers -------------------------------------------------------------

fn expect<T: std::fmt::Debug>(what: &str, got: Result<T, ErrorCode>, want: ErrorCode) -> Check {
    match got {
        Err(e) if e == want => Ok(()),
        other => Err(format!("{what}: expected {}, got {other:?}", want.name())),
    }
}

fn ok<T>(what: &str, got: Result<T, ErrorCode>) -> Result<T, String> {
    got.map_err(|e| format!("{what}: {}", e.name()))
}

fn check(what: &str, condition: bool) -> Check {
    if condition {
        Ok(())
    } else {
        Err(format!("{what}: not so"))
    }
}

fn addr(text: &str) -> IpSocketAddress {
    match text.parse::<SocketAddr>().unwrap() {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: a.port(), address: (a0, a1, a2, a3) })
        }
        SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: 0,
                address: (s0, s1, s2, s3, s4, s5, s6, s7),
                scope_id: 0,
            })
        }
    }
}

fn port(a: IpSocketAddress) -> u16 {
    match a {
        IpSocketAddress::Ipv4(a) => a.port,
        IpSocketAddress::Ipv6(a) => a.port,
    }
}

fn socket_addr(a: IpSocketAddress) -> SocketAddr {
    SocketAddr::new(ip(a), port(a))
}

fn ip(a: IpSocketAddress) -> IpAddr {
    match a {
        IpSocketAddress::Ipv4(a) => {
            let (a0, a1, a2, a3) = a.address;
            IpAddr::from([a0, a1, a2, a3])
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            IpAddr::from([s0, s1, s2, s3, s4, s5, s6, s7])
        }
    }
}

/// Waits for `ready`, failing after 5 s instead of hanging.
fn wait(ready: &Pollable) -> Check {
    let timeout = subscribe_duration(5_000_000_000);
    match poll(&[ready, &timeout]).first() {
        Some(0) => Ok(()),
        _ => Err("timed out waiting on a pollable".into()),
    }
}

/// Calls `step` until it stops answering would-block, waiting on `socket`.
fn finish<T>(
    socket: &TcpSocket,
    mut step: impl FnMut() -> Result<T, ErrorCode>,
) -> Result<T, String> {
    let ready = socket.subscribe();
    loop {
        match step() {
            Err(ErrorCode::WouldBlock) => wait(&ready)?,
            other => return other.map_err(|e| e.name().to_string()),
        }
    }
}

fn socket(family: IpAddressFamily) -> Result<TcpSocket, String> {
    ok("create-tcp-socket", create_tcp_socket(family))
}

fn bind(net: &Network, sock: &TcpSocket, at: &str) -> Check {
    ok("start-bind", sock.start_bind(net, addr(at)))?;
    finish(sock, || sock.finish_bind()).map_err(|e| format!("finish-bind: {e}"))
}

fn listener(net: &Network, at: &str, family: IpAddressFamily) -> Result<TcpSocket, String> {
    let sock = socket(family)?;
    bind(net, &sock, at)?;
    ok("start-listen", sock.start_listen())?;
    finish(&sock, || sock.finish_listen()).map_err(|e| format!("finish-listen: {e}"))?;
    Ok(sock)
}

struct Conn {
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
}

fn connect(net: &Network, sock: TcpSocket, to: IpSocketAddress) -> Result<Conn, String> {
    ok("start-connect", sock.start_connect(net, to))?;
    let (input, output) =
        finish(&sock, || sock.finish_connect()).map_err(|e| format!("finish-connect: {e}"))?;
    Ok(Conn { input, output, socket: sock })
}

fn accept(listener: &TcpSocket) -> Result<Conn, String> {
    let (socket, input, output) =
        finish(listener, || listener.accept()).map_err(|e| format!("accept: {e}"))?;
    Ok(Conn { input, output, socket })
}

/// A connected pair on loopback: (client, server side).
fn pair(net: &Network) -> Result<(Conn, Conn, TcpSocket), String> {
    let listening = listener(net, "127.0.0.1:0", V4)?;
    let at = ok("local-address", listening.local_address())?;
    let client = connect(net, socket(V4)?, at)?;
    let server = accept(&listening)?;
    Ok((client, server, listening))
}

fn send(conn: &Conn, data: &[u8]) -> Check {
    conn.output.blocking_write_and_flush(data).map_err(|e| format!("write: {e:?}"))
}

fn recv(conn: &Conn, len: usize) -> Result<Vec<u8>, String> {
    read_exact(&conn.input, len)
}

fn read_exact(input: &InputStream, len: usize) -> Result<Vec<u8>, String> {
    let ready = input.subscribe();
    let mut got = Vec::new();
    while got.len() < len {
        match input.read((len - got.len()) as u64) {
            Ok(bytes) if bytes.is_empty() => wait(&ready)?,
            Ok(bytes) => got.extend(bytes),
            Err(e) => return Err(format!("read after {} bytes: {e:?}", got.len())),
        }
    }
    Ok(got)
}

fn read_end(input: &InputStream) -> Result<&'static str, String> {
    let ready = input.subscribe();
    for _ in 0..100 {
        match input.read(64) {
            Ok(bytes) if bytes.is_empty() => wait(&ready)?,
            Ok(_) => {}
            Err(StreamError::Closed) => return Ok("closed"),
            Err(StreamError::LastOperationFailed(_)) => return Ok("last-operation-failed"),
        }
    }
    Err("the stream never ended".into())
}

// ---- the checks ------------------------------------------------------------

fn unbound_state(_: &Network) -> Check {
    let sock = socket(V4)?;
    expect("finish-bind", sock.finish_bind(), ErrorCode::NotInProgress)?;
    expect("finish-connect", sock.finish_connect().map(drop), ErrorCode::NotInProgress)?;
    expect("start-listen", sock.start_listen(), ErrorCode::InvalidState)?;
    expect("finish-listen", sock.finish_listen(), ErrorCode::NotInProgress)?;
    expect("accept", sock.accept().map(drop), ErrorCode::InvalidState)?;
    expect("shutdown", sock.shutdown(ShutdownType::Both), ErrorCode::InvalidState)?;
    expect("local-address", sock.local_address(), ErrorCode::InvalidState)?;
    expect("remote-address", sock.remote_address(), ErrorCode::InvalidState)?;
    check("is-listening is false", !sock.is_listening())?;
    check("address-family is ipv4", sock.address_family() == V4)?;
    // The pollable of a socket with nothing in progress is ready at once.
    let ready = sock.subscribe();
    wait(&ready)
}

fn bind_arguments(net: &Network) -> Check {
    let v4 = socket(V4)?;
    let v6 = socket(V6)?;
    let bad =
        |s: &TcpSocket, a: &str| expect(a, s.start_bind(net, addr(a)), ErrorCode::InvalidArgument);
    bad(&v4, "[::1]:0")?;
    bad(&v4, "255.255.255.255:0")?;
    bad(&v4, "224.0.0.1:0")?;
    bad(&v6, "127.0.0.1:0")?;
    bad(&v6, "[::ffff:127.0.0.1]:0")?;
    bad(&v6, "[ff02::1]:0")?;
    // Wrong arguments change nothing: the socket binds afterwards.
    bind(net, &v4, "127.0.0.1:0")
}

fn bind_denied_stays_unbound(net: &Network) -> Check {
    let sock = socket(V4)?;
    expect(
        "bind outside the grant",
        sock.start_bind(net, addr("127.0.0.2:0")),
        ErrorCode::AccessDenied,
    )?;
    expect("local-address", sock.local_address(), ErrorCode::InvalidState)?;
    bind(net, &sock, "127.0.0.1:0")
}

fn bind_in_progress(net: &Network) -> Check {
    let sock = socket(V4)?;
    ok("start-bind", sock.start_bind(net, addr("127.0.0.1:0")))?;
    expect("local-address while binding", sock.local_address(), ErrorCode::InvalidState)?;
    expect(
        "start-bind again",
        sock.start_bind(net, addr("127.0.0.1:0")),
        ErrorCode::ConcurrencyConflict,
    )?;
    expect("start-listen while binding", sock.start_listen(), ErrorCode::ConcurrencyConflict)?;
    expect("finish-listen", sock.finish_listen(), ErrorCode::NotInProgress)?;
    finish(&sock, || sock.finish_bind())?;
    expect("finish-bind again", sock.finish_bind(), ErrorCode::NotInProgress)?;
    expect(
        "start-bind when bound",
        sock.start_bind(net, addr("127.0.0.1:0")),
        ErrorCode::InvalidState,
    )?;
    let local = ok("local-address", sock.local_address())?;
    check("bound to a real port", port(local) != 0)?;
    expect("accept when bound", sock.accept().map(drop), ErrorCode::InvalidState)?;
    expect("shutdown when bound", sock.shutdown(ShutdownType::Both), ErrorCode::InvalidState)
}

fn listen_in_progress(net: &Network) -> Check {
    let sock = socket(V4)?;
    bind(net, &sock, "127.0.0.1:0")?;
    ok("start-listen", sock.start_listen())?;
    check("not listening before finish-listen", !sock.is_listening())?;
    expect("accept before finish-listen", sock.accept().map(drop), ErrorCode::InvalidState)?;
    expect("start-listen again", sock.start_listen(), ErrorCode::ConcurrencyConflict)?;
    expect("finish-bind", sock.finish_bind(), ErrorCode::NotInProgress)?;
    finish(&sock, || sock.finish_listen())?;
    check("listening", sock.is_listening())?;
    expect("finish-listen again", sock.finish_listen(), ErrorCode::NotInProgress)?;
    expect("start-listen when listening", sock.start_listen(), ErrorCode::InvalidState)?;
    let somewhere = ok("local-address", sock.local_address())?;
    expect(
        "start-connect when listening",
        sock.start_connect(net, somewhere),
        ErrorCode::InvalidState,
    )?;
    expect("shutdown when listening", sock.shutdown(ShutdownType::Both), ErrorCode::InvalidState)?;
    expect("remote-address when listening", sock.remote_address(), ErrorCode::InvalidState)?;
    expect("accept with nobody waiting", sock.accept().map(drop), ErrorCode::WouldBlock)
}

fn listen_denied_closes(net: &Network) -> Check {
    // Binding the wildcard address on port 0 is allowed (a connect does it
    // implicitly); listening there is not granted.
    let sock = socket(V4)?;
    bind(net, &sock, "0.0.0.0:0")?;
    expect("start-listen outside the grant", sock.start_listen(), ErrorCode::AccessDenied)?;
    expect("start-listen after a failed listen", sock.start_listen(), ErrorCode::InvalidState)?;
    expect("local-address when closed", sock.local_address(), ErrorCode::InvalidState)?;
    expect("finish-listen", sock.finish_listen(), ErrorCode::NotInProgress)
}

fn accept_and_connected_state(net: &Network) -> Check {
    let listening = listener(net, "127.0.0.1:0", V4)?;
    let at = ok("local-address", listening.local_address())?;
    let client = connect(net, socket(V4)?, at)?;
    let server = accept(&listening)?;
    let client_local = ok("client local-address", client.socket.local_address())?;
    let peer = ok("remote-address", server.socket.remote_address())?;
    check("the server sees the client's address", socket_addr(peer) == socket_addr(client_local))?;
    check("accepted socket is not listening", !server.socket.is_listening())?;
    check("accepted socket keeps the family", server.socket.address_family() == V4)?;
    let s = &server.socket;
    expect(
        "start-bind when connected",
        s.start_bind(net, addr("127.0.0.1:0")),
        ErrorCode::InvalidState,
    )?;
    expect("start-listen when connected", s.start_listen(), ErrorCode::InvalidState)?;
    expect("start-connect when connected", s.start_connect(net, at), ErrorCode::InvalidState)?;
    expect("accept when connected", s.accept().map(drop), ErrorCode::InvalidState)?;
    expect(
        "set-listen-backlog-size when connected",
        s.set_listen_backlog_size(5),
        ErrorCode::InvalidState,
    )?;
    send(&client, b"ping")?;
    check("server got ping", recv(&server, 4)? == b"ping")?;
    send(&server, b"pong")?;
    check("client got pong", recv(&client, 4)? == b"pong")
}

fn connect_arguments(net: &Network) -> Check {
    let listening = listener(net, "127.0.0.1:0", V4)?;
    let at = port(ok("local-address", listening.local_address())?);
    let v4 = socket(V4)?;
    let v6 = socket(V6)?;
    let bad = |s: &TcpSocket, a: &str| {
        expect(a, s.start_connect(net, addr(a)), ErrorCode::InvalidArgument)
    };
    bad(&v4, &format!("0.0.0.0:{at}"))?;
    bad(&v4, "127.0.0.1:0")?;
    bad(&v4, &format!("[::1]:{at}"))?;
    bad(&v4, &format!("255.255.255.255:{at}"))?;
    bad(&v4, &format!("224.0.0.1:{at}"))?;
    bad(&v6, &format!("[::]:{at}"))?;
    bad(&v6, &format!("127.0.0.1:{at}"))?;
    bad(&v6, &format!("[::ffff:127.0.0.1]:{at}"))?;
    bad(&v6, &format!("[ff02::1]:{at}"))?;
    // Wrong arguments change nothing: the socket connects afterwards.
    let conn = connect(net, v4, addr(&format!("127.0.0.1:{at}")))?;
    drop(accept(&listening)?);
    drop(conn);
    Ok(())
}

fn connect_denied_closes(net: &Network) -> Check {
    let sock = socket(V4)?;
    expect(
        "connect outside the grant",
        sock.start_connect(net, addr("127.0.0.2:80")),
        ErrorCode::AccessDenied,
    )?;
    expect("finish-connect", sock.finish_connect().map(drop), ErrorCode::NotInProgress)?;
    expect(
        "start-connect after a failure",
        sock.start_connect(net, addr("127.0.0.1:80")),
        ErrorCode::InvalidState,
    )?;
    expect(
        "start-bind after a failure",
        sock.start_bind(net, addr("127.0.0.1:0")),
        ErrorCode::InvalidState,
    )?;
    expect("keep-alive-enabled when closed", sock.keep_alive_enabled(), ErrorCode::InvalidState)
}

fn connect_refused_closes(net: &Network) -> Check {
    // A port bound by a socket that does not listen refuses connections.
    // (The first bind of 127.0.0.1:0 may be lent the listener the host
    // keeps for that grant, which listens: `_holder` takes it first.)
    let _holder = listener(net, "127.0.0.1:0", V4)?;
    let probe = socket(V4)?;
    bind(net, &probe, "127.0.0.1:0")?;
    let free = port(ok("local-address", probe.local_address())?);
    let sock = socket(V4)?;
    ok("start-connect", sock.start_connect(net, addr(&format!("127.0.0.1:{free}"))))?;
    let refused = match finish(&sock, || sock.finish_connect()) {
        Ok(_) => "connected".to_string(),
        Err(e) => e,
    };
    check(
        &format!("finish-connect is connection-refused, not {refused}"),
        refused == "connection-refused",
    )?;
    expect("finish-connect again", sock.finish_connect().map(drop), ErrorCode::NotInProgress)?;
    expect("local-address when closed", sock.local_address(), ErrorCode::InvalidState)?;
    expect(
        "start-connect when closed",
        sock.start_connect(net, addr("127.0.0.1:80")),
        ErrorCode::InvalidState,
    )
}

fn connect_in_progress(net: &Network) -> Check {
    let listening = listener(net, "127.0.0.1:0", V4)?;
    let at = ok("local-address", listening.local_address())?;
    let sock = socket(V4)?;
    ok("start-connect", sock.start_connect(net, at))?;
    expect("start-connect again", sock.start_connect(net, at), ErrorCode::ConcurrencyConflict)?;
    expect(
        "start-bind while connecting",
        sock.start_bind(net, addr("127.0.0.1:0")),
        ErrorCode::ConcurrencyConflict,
    )?;
    expect("start-listen while connecting", sock.start_listen(), ErrorCode::ConcurrencyConflict)?;
    expect("finish-bind", sock.finish_bind(), ErrorCode::NotInProgress)?;
    let (input, output) = finish(&sock, || sock.finish_connect())?;
    expect("finish-connect again", sock.finish_connect().map(drop), ErrorCode::NotInProgress)?;
    let remote = ok("remote-address", sock.remote_address())?;
    check("remote-address is the listener", socket_addr(remote) == socket_addr(at))?;
    drop((input, output));
    Ok(())
}

fn option_ranges(_: &Network) -> Check {
    let sock = socket(V4)?;
    let zero = ErrorCode::InvalidArgument;
    expect("backlog 0", sock.set_listen_backlog_size(0), zero)?;
    expect("keep-alive-idle-time 0", sock.set_keep_alive_idle_time(0), zero)?;
    expect("keep-alive-interval 0", sock.set_keep_alive_interval(0), zero)?;
    expect("keep-alive-count 0", sock.set_keep_alive_count(0), zero)?;
    expect("hop-limit 0", sock.set_hop_limit(0), zero)?;
    expect("receive-buffer-size 0", sock.set_receive_buffer_size(0), zero)?;
    expect("send-buffer-size 0", sock.set_send_buffer_size(0), zero)?;
    // Anything else is clamped, never refused.
    ok("backlog 1", sock.set_listen_backlog_size(1))?;
    ok("backlog max", sock.set_listen_backlog_size(u64::MAX))?;
    ok("idle 1 ns", sock.set_keep_alive_idle_time(1))?;
    let idle = ok("keep-alive-idle-time", sock.keep_alive_idle_time())?;
    check("1 ns idle is clamped to (0, 1 s]", idle > 0 && idle <= 1_000_000_000)?;
    ok("idle max", sock.set_keep_alive_idle_time(u64::MAX))?;
    ok("interval max", sock.set_keep_alive_interval(u64::MAX))?;
    ok("count max", sock.set_keep_alive_count(u32::MAX))?;
    ok("hop-limit max", sock.set_hop_limit(u8::MAX))?;
    ok("receive buffer 1", sock.set_receive_buffer_size(1))?;
    ok("send buffer max", sock.set_send_buffer_size(u64::MAX))?;
    ok("keep-alive on", sock.set_keep_alive_enabled(true))?;
    ok("keep-alive off", sock.set_keep_alive_enabled(false))
}

fn option_readback(_: &Network) -> Check {
    let sock = socket(V4)?;
    ok("set idle", sock.set_keep_alive_idle_time(42_000_000_000))?;
    check("idle reads back", sock.keep_alive_idle_time() == Ok(42_000_000_000))?;
    ok("set interval", sock.set_keep_alive_interval(7_000_000_000))?;
    check("interval reads back", sock.keep_alive_interval() == Ok(7_000_000_000))?;
    ok("set count", sock.set_keep_alive_count(42))?;
    check("count reads back", sock.keep_alive_count() == Ok(42))?;
    check("setting the idle time left keep-alive off", sock.keep_alive_enabled() == Ok(false))?;
    ok("set hop-limit", sock.set_hop_limit(42))?;
    check("hop-limit reads back", sock.hop_limit() == Ok(42))?;
    ok("set receive buffer", sock.set_receive_buffer_size(0x10000))?;
    check("receive buffer reads back", sock.receive_buffer_size() == Ok(0x10000))?;
    ok("set send buffer", sock.set_send_buffer_size(0x10000))?;
    check("send buffer reads back", sock.send_buffer_size() == Ok(0x10000))
}

fn options_inherited(net: &Network) -> Check {
    let listening = socket(V4)?;
    ok("keep-alive", listening.set_keep_alive_enabled(true))?;
    ok("idle", listening.set_keep_alive_idle_time(42_000_000_000))?;
    ok("hop-limit", listening.set_hop_limit(42))?;
    bind(net, &listening, "127.0.0.1:0")?;
    ok("start-listen", listening.start_listen())?;
    finish(&listening, || listening.finish_listen())?;
    let at = ok("local-address", listening.local_address())?;
    let client = connect(net, socket(V4)?, at)?;
    let server = accept(&listening)?;
    check("accepted: keep-alive", server.socket.keep_alive_enabled() == Ok(true))?;
    check("accepted: idle", server.socket.keep_alive_idle_time() == Ok(42_000_000_000))?;
    check("accepted: hop-limit", server.socket.hop_limit() == Ok(42))?;
    drop((client, server));
    Ok(())
}

fn backlog_after_listen(net: &Network) -> Check {
    let sock = listener(net, "127.0.0.1:0", V4)?;
    ok("set-listen-backlog-size when listening", sock.set_listen_backlog_size(16))
}

fn shutdown_send(net: &Network) -> Check {
    let (client, server, _listening) = pair(net)?;
    send(&client, b"last words")?;
    ok("shutdown(send)", client.socket.shutdown(ShutdownType::Send))?;
    ok("shutdown(send) again", client.socket.shutdown(ShutdownType::Send))?;
    check("server got the data", recv(&server, 10)? == b"last words")?;
    check("then the end of the stream", read_end(&server.input)? == "closed")?;
    check(
        "client writes: closed",
        matches!(client.output.check_write(), Err(StreamError::Closed)),
    )?;
    // The other direction still works.
    send(&server, b"reply")?;
    check("client still reads", recv(&client, 5)? == b"reply")
}

fn shutdown_receive(net: &Network) -> Check {
    let (client, server, _listening) = pair(net)?;
    ok("shutdown(receive)", client.socket.shutdown(ShutdownType::Receive))?;
    check("client reads: closed", matches!(client.input.read(1), Err(StreamError::Closed)))?;
    send(&client, b"still sending")?;
    check("server still reads", recv(&server, 13)? == b"still sending")
}

fn end_of_stream_is_closed(net: &Network) -> Check {
    let (client, server, _listening) = pair(net)?;
    send(&client, b"bye")?;
    drop(client);
    check("data first", recv(&server, 3)? == b"bye")?;
    check("then closed", read_end(&server.input)? == "closed")
}

fn socket_dropped_before_streams(net: &Network) -> Check {
    let (client, server, _listening) = pair(net)?;
    let Conn { input, output, socket } = server;
    drop(socket);
    let server = |data: &[u8]| output.blocking_write_and_flush(data).map_err(|e| format!("{e:?}"));
    server(b"after closesocket")?;
    check("its output stream still sends", recv(&client, 17)? == b"after closesocket")?;
    send(&client, b"and back")?;
    check("its input stream still reads", read_exact(&input, 8)? == b"and back")
}

fn ipv6(net: &Network) -> Check {
    let listening = listener(net, "[::1]:0", V6)?;
    let at = ok("local-address", listening.local_address())?;
    check("IPv6 loopback", ip(at) == "::1".parse::<IpAddr>().unwrap())?;
    check("address-family is ipv6", listening.address_family() == V6)?;
    let client = connect(net, socket(V6)?, at)?;
    let server = accept(&listening)?;
    send(&client, b"six")?;
    check("echo over IPv6", recv(&server, 3)? == b"six")
}

/// Not a TCP check, but a wasi:sockets one the host answers itself: a
/// lookup the policy refuses fails the way the WIT says lookups fail.
fn name_lookup_not_granted(net: &Network) -> Check {
    let result = resolve_addresses(net, "localhost").map(drop);
    expect("resolve-addresses without --allow-dns", result, ErrorCode::PermanentResolverFailure)
}

// ---- modes that must trap, and one that serves a test's client --------------

fn write_over_permit() {
    let net = instance_network();
    let (client, _server, _listening) = pair(&net).unwrap();
    let permit = client.output.check_write().unwrap();
    println!("check-write granted {permit}");
    let _ = client.output.write(&vec![0; permit as usize + 1]);
    println!("the write over the permit did not trap");
}

fn blocking_write_4097() {
    let net = instance_network();
    let (client, _server, _listening) = pair(&net).unwrap();
    let _ = client.output.blocking_write_and_flush(&[0; 4097]);
    println!("blocking-write-and-flush of 4097 bytes did not trap");
}

/// `write` to a stream that is not a socket's (the host sends socket
/// writes from the guest's memory itself, and leaves the others to
/// wasmtime-wasi): check-write, write and flush on stdout.
fn write_stdout() {
    let stdout = wasi::cli::stdout::get_stdout();
    let line = b"written to stdout with check-write, write and flush\n";
    let permit = stdout.check_write().expect("check-write on stdout");
    assert!(permit >= line.len() as u64, "stdout permits only {permit} bytes");
    stdout.write(line).expect("write on stdout");
    stdout.blocking_flush().expect("flush of stdout");
}

fn poll_empty() {
    let ready = poll(&[]);
    println!("poll of an empty list did not trap: {ready:?}");
}

/// Polls a zero timeout together with a stream that data has been sent
/// to, as a guest that never waits does: the data must be seen, in each
/// of 10 rounds, within 100 polls (the host lets the runtime look for
/// network events after 32 polls in a row answered at once).
fn busy_poll() {
    let net = instance_network();
    for round in 1..=10 {
        let (client, server, _listening) = pair(&net).unwrap();
        send(&client, b"hello").unwrap();
        let readable = server.input.subscribe();
        let mut polls = 1;
        while !poll(&[&subscribe_duration(0), &readable]).contains(&1) {
            polls += 1;
            if polls > 100 {
                return println!("round {round}: no data seen in 100 polls");
            }
        }
        println!("round {round}: readable at poll {polls}");
    }
    println!("busy poll: every round saw its data");
}

fn serve_once() {
    let net = instance_network();
    let at = std::env::var("LISTEN_ADDR").unwrap();
    let family = if at.starts_with('[') { V6 } else { V4 };
    let listening = listener(&net, &at, family).unwrap();
    println!("serving on {:?}", listening.local_address().map(port));
    let conn = accept(&listening).unwrap();
    let ready = conn.input.subscribe();
    loop {
        match conn.input.read(512) {
            Ok(bytes) if bytes.is_empty() => ready.block(),
            Ok(bytes) => println!("read {} bytes", bytes.len()),
            Err(StreamError::Closed) => return println!("the stream ended: closed"),
            Err(StreamError::LastOperationFailed(e)) => {
                return println!(
                    "the stream ended: last-operation-failed ({})",
                    e.to_debug_string()
                )
            }
        }
    }
}

fn write_after_reset() {
    let net = instance_network();
    let listening = listener(&net, &std::env::var("LISTEN_ADDR").unwrap(), V4).unwrap();
    let conn = accept(&listening).unwrap();
    conn.input.blocking_read(1).unwrap();
    println!("got a byte; writing until the stream fails");
    let pause = || subscribe_duration(10_000_000).block();
    let failure = loop {
        match conn.output.check_write() {
            Ok(0) => pause(),
            Ok(_) => match conn.output.write(b"y") {
                Ok(()) => pause(),
                Err(e) => break e,
            },
            Err(e) => break e,
        }
    };
    println!("the first failure: {}", stream_error(&failure));
    let next = conn.output.check_write().map_err(|e| stream_error(&e));
    println!("then check-write: {next:?}");
}

fn stream_error(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "closed".to_string(),
        StreamError::LastOperationFailed(e) => {
            format!("last-operation-failed ({})", e.to_debug_string())
        }
    }
}
