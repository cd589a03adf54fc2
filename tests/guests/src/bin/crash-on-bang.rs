//! An echo server (Rust std, one client at a time) with a bug: a client
//! that sends `!` makes it panic. With `--restart on-failure` the host
//! starts it again, so one bad input does not take the service down.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0:9000".into());
    let listener = TcpListener::bind(addr.split(',').next().unwrap()).expect("bind");
    println!("crash-on-bang listening");
    for client in listener.incoming() {
        let Ok(mut client) = client else { continue };
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = client.read(&mut buf) {
            if buf[..n].contains(&b'!') {
                panic!("a client sent `!`");
            }
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
}
