//! The shapes of traffic every echo server must handle byte for byte: the
//! checks `echo.rs` runs against each of our guests, and the toolchains
//! tests against guests from elsewhere (and ours on the wasmtime CLI).

use super::{assert_echoes, assert_echoes_on, connect, pattern};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Every traffic check in turn, on one server: what the guests from other
/// toolchains, and ours on the wasmtime CLI, must pass too.
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

pub fn one_byte(addr: SocketAddr) {
    assert_echoes(addr, b"x");
}

pub fn a_line_of_text(addr: SocketAddr) {
    assert_echoes(addr, "hello, echo server! 안녕하세요\n".as_bytes());
}

pub fn binary_with_nul_bytes(addr: SocketAddr) {
    let mut data = pattern(4096, 1);
    data[..4].copy_from_slice(&[0, 0, 0xff, 0]);
    assert_echoes(addr, &data);
}

pub fn one_mib_sent_in_one_go_while_reading_concurrently(addr: SocketAddr) {
    assert_echoes(addr, &pattern(1 << 20, 2));
}

pub fn many_small_sends(addr: SocketAddr) {
    let data = pattern(5000, 3);
    assert_echoes_on(connect(addr), &data, &[1, 2, 3]);
}

pub fn pipelined_messages_arriving_in_arbitrary_pieces(addr: SocketAddr) {
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

pub fn half_close_returns_every_byte_then_eof(addr: SocketAddr) {
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

pub fn clients_are_served_one_after_another(addr: SocketAddr) {
    for i in 0..5 {
        assert_echoes(addr, format!("client {i}").as_bytes());
    }
}

/// Ends `stream` with a reset (SO_LINGER 0), not a polite close.
pub fn reset(stream: std::net::TcpStream) {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}
