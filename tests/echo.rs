//! Echo is byte-exact, whatever the shape of the traffic, for every echo
//! guest: each check below runs against the built-in guest and against
//! the lesson's one-client-at-a-time guest.

use crate::support::guests::{default_guest, EchoGuest};
use crate::support::{assert_echoes, assert_echoes_on, connect, pattern, Host};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// One `#[test]` per check and per guest.
macro_rules! for_each_echo_guest {
    ($($check:ident),* $(,)?) => {
        mod built_in {
            $( #[test] fn $check() { super::$check(super::EchoGuest::BuiltIn) } )*
        }
        mod iterative {
            $( #[test] fn $check() { super::$check(super::EchoGuest::Iterative) } )*
        }
    };
}

for_each_echo_guest!(
    one_byte,
    a_line_of_text,
    binary_with_nul_bytes,
    one_mib_sent_in_one_go_while_reading_concurrently,
    many_small_sends,
    pipelined_messages_arriving_in_arbitrary_pieces,
    half_close_returns_every_byte_then_eof,
    clients_are_served_one_after_another,
    a_client_that_resets_mid_stream_does_not_stop_the_server,
    a_client_that_resets_right_after_connecting_does_not_stop_the_server,
);

fn serve(guest: EchoGuest) -> (Host, SocketAddr) {
    Host::serve(guest.file().as_deref())
}

fn one_byte(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    assert_echoes(addr, b"x");
}

fn a_line_of_text(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    assert_echoes(addr, "hello, echo server! 안녕하세요\n".as_bytes());
}

fn binary_with_nul_bytes(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    let mut data = pattern(4096, 1);
    data[..4].copy_from_slice(&[0, 0, 0xff, 0]);
    assert_echoes(addr, &data);
}

fn one_mib_sent_in_one_go_while_reading_concurrently(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    assert_echoes(addr, &pattern(1 << 20, 2));
}

fn many_small_sends(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    let data = pattern(5000, 3);
    assert_echoes_on(connect(addr), &data, &[1, 2, 3]);
}

fn pipelined_messages_arriving_in_arbitrary_pieces(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
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

fn half_close_returns_every_byte_then_eof(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
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

fn clients_are_served_one_after_another(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
    for i in 0..5 {
        assert_echoes(addr, format!("client {i}").as_bytes());
    }
}

fn a_client_that_resets_mid_stream_does_not_stop_the_server(guest: EchoGuest) {
    let (host, addr) = serve(guest);
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

fn a_client_that_resets_right_after_connecting_does_not_stop_the_server(guest: EchoGuest) {
    let (_host, addr) = serve(guest);
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
