//! Tries everything the default sandbox denies, and prints one line per try:
//! `<what>: refused (<error>)` or `<what>: ALLOWED`.
//!
//! Usage: sandbox-probe <bind-addr> <connect-addr> <file> <env-var> <name>

use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bind, connect, file, var, name] = &args[..] else {
        eprintln!("usage: sandbox-probe <bind-addr> <connect-addr> <file> <env-var> <name>");
        std::process::exit(2);
    };
    report(&format!("bind {bind}"), TcpListener::bind(bind.as_str()).map(drop));
    // Binding the wildcard address on a system-picked port is allowed (it
    // is what connect() does implicitly); listening there is not.
    report("listen 0.0.0.0:0", TcpListener::bind("0.0.0.0:0").map(drop));
    report(&format!("connect {connect}"), TcpStream::connect(connect.as_str()).map(drop));
    report(&format!("read {file}"), std::fs::read(file).map(drop));
    // Beside the file read: refused unless its directory is granted `:rw`.
    let copy = format!("{file}.copy");
    report(&format!("write {copy}"), std::fs::write(&copy, "written by the guest"));
    report("list /", std::fs::read_dir("/").map(drop));
    match std::env::var(var) {
        Ok(value) => println!("env {var}: ALLOWED ({value})"),
        Err(e) => println!("env {var}: refused ({e})"),
    }
    report(&format!("resolve {name}"), (name.as_str(), 80).to_socket_addrs().map(drop));
    report("udp bind 0.0.0.0:0", UdpSocket::bind("0.0.0.0:0").map(drop));
}

fn report(what: &str, result: Result<(), impl std::fmt::Display>) {
    match result {
        Ok(()) => println!("{what}: ALLOWED"),
        Err(e) => println!("{what}: refused ({e})"),
    }
}
