//! Echo is byte-exact, whatever the shape of the traffic.

use crate::support::guests::default_guest;
use crate::support::{assert_echoes, assert_echoes_on, connect, pattern, Host};
use socket2::SockRef;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn one_byte() {
    let (_host, addr) = Host::serve(None);
    assert_echoes(addr, b"x");
}

#[test]
fn a_line_of_text() {
    let (_host, addr) = Host::serve(None);
    assert_echoes(addr, "hello, echo server! 안녕하세요\n".as_bytes());
}

#[test]
fn binary_with_nul_bytes() {
    let (_host, addr) = Host::serve(None);
    let mut data = pattern(4096, 1);
    data[..4].copy_from_slice(&[0, 0, 0xff, 0]);
    assert_echoes(addr, &data);
}

#[test]
fn one_mib_sent_in_one_go_while_reading_concurrently() {
    let (_host, addr) = Host::serve(None);
    assert_echoes(addr, &pattern(1 << 20, 2));
}

#[test]
fn many_small_sends() {
    let (_host, addr) = Host::serve(None);
    let data = pattern(5000, 3);
    assert_echoes_on(connect(addr), &data, &[1, 2, 3]);
}

#[test]
fn pipelined_messages_arriving_in_arbitrary_pieces() {
    let (_host, addr) = Host::serve(None);
    // Messages of many sizes back to back, cut into pieces that straddle
    // both the messages and the guest's 512-byte reads.
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

#[test]
fn half_close_returns_every_byte_then_eof() {
    let (_host, addr) = Host::serve(None);
    let mut client = connect(addr);
    let data = pattern(100_000, 4);
    // Small enough to sit in the socket buffers: send it all, then close
    // our sending side before reading a single byte.
    client.write_all(&data).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert!(
        echoed == data,
        "got {} of {} bytes back",
        echoed.len(),
        data.len()
    );
}

#[test]
fn clients_are_served_one_after_another() {
    let (_host, addr) = Host::serve(None);
    for i in 0..5 {
        assert_echoes(addr, format!("client {i}").as_bytes());
    }
}

#[test]
fn a_client_that_resets_mid_stream_does_not_stop_the_server() {
    let (host, addr) = Host::serve(None);
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

#[test]
fn a_client_that_resets_right_after_connecting_does_not_stop_the_server() {
    let (_host, addr) = Host::serve(None);
    for _ in 0..5 {
        reset(connect(addr));
    }
    assert_echoes(addr, b"still here");
}

#[test]
fn a_guest_from_a_file_echoes_the_same() {
    let guest = default_guest();
    let (_host, addr) = Host::serve(Some(&guest));
    assert_echoes(addr, &pattern(70_000, 6));
}

fn reset(stream: std::net::TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}
