//! Echo is byte-exact, whatever the shape of the traffic, for every echo
//! guest: each check below runs against the built-in guest and against
//! the lesson's one-client-at-a-time guest.

use crate::support::guests::{default_guest, EchoGuest};
use crate::support::{assert_echoes, assert_echoes_on, connect, pattern, Host};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// One `#[test]` per check and per guest, each with a fresh host. A
/// traffic check needs only the address; a server check also reads the
/// host's output.
macro_rules! for_each_echo_guest {
    (traffic: [$($traffic:ident),* $(,)?], server: [$($server:ident),* $(,)?] $(,)?) => {
        mod built_in {
            use super::EchoGuest::BuiltIn as GUEST;
            $( #[test] fn $traffic() { super::run(GUEST, |_, addr| super::$traffic(addr)) } )*
            $( #[test] fn $server() { super::run(GUEST, super::$server) } )*
        }
        mod iterative {
            use super::EchoGuest::Iterative as GUEST;
            $( #[test] fn $traffic() { super::run(GUEST, |_, addr| super::$traffic(addr)) } )*
            $( #[test] fn $server() { super::run(GUEST, super::$server) } )*
        }
    };
}

for_each_echo_guest!(
    traffic: [
        one_byte,
        a_line_of_text,
        binary_with_nul_bytes,
        one_mib_sent_in_one_go_while_reading_concurrently,
        many_small_sends,
        pipelined_messages_arriving_in_arbitrary_pieces,
        half_close_returns_every_byte_then_eof,
        clients_are_served_one_after_another,
    ],
    server: [
        a_client_that_resets_mid_stream_does_not_stop_the_server,
        a_client_that_resets_right_after_connecting_does_not_stop_the_server,
    ],
);

fn run(guest: EchoGuest, check: impl FnOnce(&Host, SocketAddr)) {
    let (host, addr) = Host::serve(guest.file().as_deref());
    check(&host, addr);
}

/// Every traffic check in turn, on one server: what the guests from other
/// toolchains, and ours on the wasmtime CLI, must pass too (`swap.rs`).
pub fn every_traffic_shape(addr: SocketAddr) {
    one_byte(addr);
    a_line_of_text(addr);
    binary_with_nul_bytes(addr);
    one_mib_sent_in_one_go_while_reading_concurrently(addr);
    many_small_sends(addr);
    pipelined_messages_arriving_in_arbitrary_pieces(addr);
    half_close_returns_every_byte_then_eof(addr);
    clients_are_served_one_after_another(addr);
}

fn one_byte(addr: SocketAddr) {
    assert_echoes(addr, b"x");
}

fn a_line_of_text(addr: SocketAddr) {
    assert_echoes(addr, "hello, echo server! 안녕하세요\n".as_bytes());
}

fn binary_with_nul_bytes(addr: SocketAddr) {
    let mut data = pattern(4096, 1);
    data[..4].copy_from_slice(&[0, 0, 0xff, 0]);
    assert_echoes(addr, &data);
}

fn one_mib_sent_in_one_go_while_reading_concurrently(addr: SocketAddr) {
    assert_echoes(addr, &pattern(1 << 20, 2));
}

fn many_small_sends(addr: SocketAddr) {
    let data = pattern(5000, 3);
    assert_echoes_on(connect(addr), &data, &[1, 2, 3]);
}

fn pipelined_messages_arriving_in_arbitrary_pieces(addr: SocketAddr) {
    // Messages of many sizes back to back, cut into pieces that straddle
    // both the messages and the guests' read sizes.
    let data: Vec<u8> = (0..200)
        .flat_map(|i| {
            let mut message = format!("message {i}:").into_bytes();
            message.extend(pattern(i * 37 % 1500, i as u64));
            message.push(b'\n');
            message
        })
        .collect();
    assert_echoes_on(connect(addr), &data, &[1, 511, 7, 513, 2000, 64, 3]);
}

fn half_close_returns_every_byte_then_eof(addr: SocketAddr) {
    let mut client = connect(addr);
    let data = pattern(100_000, 4);
    // Small enough to sit in the socket buffers: send it all, then close
    // our sending side before reading a single byte.
    client.write_all(&data).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert!(echoed == data, "got {} of {} bytes back", echoed.len(), data.len());
}

fn clients_are_served_one_after_another(addr: SocketAddr) {
    for i in 0..5 {
        assert_echoes(addr, format!("client {i}").as_bytes());
    }
}

fn a_client_that_resets_mid_stream_does_not_stop_the_server(host: &Host, addr: SocketAddr) {
    let mut client = connect(addr);
    client.write_all(&pattern(10_000, 5)).unwrap();
    // Read some of the echo, so the guest is surely inside its echo loop...
    let mut some = [0u8; 100];
    client.read_exact(&mut some).unwrap();
    // ...then reset: SO_LINGER 0 turns close() into an RST.
    reset(client);
    host.wait_for("client disconnected");
    assert_echoes(addr, b"still here");
}

fn a_client_that_resets_right_after_connecting_does_not_stop_the_server(
    _host: &Host,
    addr: SocketAddr,
) {
    for _ in 0..5 {
        reset(connect(addr));
    }
    assert_echoes(addr, b"still here");
}

#[test]
fn the_built_in_guest_from_a_file_echoes_the_same() {
    let guest = default_guest();
    let (_host, addr) = Host::serve(Some(&guest));
    assert_echoes(addr, &pattern(70_000, 6));
}

pub fn reset(stream: std::net::TcpStream) {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}
