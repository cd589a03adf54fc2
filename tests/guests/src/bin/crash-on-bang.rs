//! An echo server (Rust std, one client at a time) with a bug: a client
//! that sends `!` makes it panic. With `--restart on-failure` the host
//! starts it again, so one bad input does not take the service down.
//!
//! With CONTROL set (an address, `--env CONTROL=...`), each instance
//! first connects there and waits until the test closes that connection,
//! and only then binds: the test knows when an instance has started and
//! has not listened yet. (Not an argument: a test swaps another guest in
//! with this one's arguments.)

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    if let Ok(control) = std::env::var("CONTROL") {
        let mut control = std::net::TcpStream::connect(control).expect("the control connection");
        let _ = control.read_to_end(&mut Vec::new());
    }
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
