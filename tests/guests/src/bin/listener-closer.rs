//! An echo server, one client at a time, that closes its listener when a
//! client sends the line `close-listener` (answering `closed`), and goes
//! on echoing that client until it leaves; then it exits.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let addr = std::env::var("LISTEN_ADDR").expect("LISTEN_ADDR");
    let mut listener = Some(TcpListener::bind(addr.split(',').next().unwrap()).expect("bind"));
    while let Some(open) = &listener {
        let (client, _) = open.accept().expect("accept");
        println!("[closer] client connected");
        let mut lines = BufReader::new(&client);
        let mut writer: &TcpStream = &client;
        let mut line = String::new();
        while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "close-listener\n" {
                listener = None;
                println!("[closer] closed its listener");
                writer.write_all(b"closed\n").expect("write");
            } else {
                writer.write_all(line.as_bytes()).expect("write");
            }
            line.clear();
        }
    }
}
