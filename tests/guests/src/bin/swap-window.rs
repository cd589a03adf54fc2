//! A guest swapped in that holds the granted address for a while before it
//! decides: it binds the first LISTEN_ADDR (and, in mode `listen`, listens
//! there too), connects to the test's control address (its first argument)
//! and waits until the test closes that connection. Then, in modes `bind`
//! and `listen`, it traps (the swap fails); in mode `serve` it listens (if
//! it has not yet) and echoes clients one at a time.
//!
//! Usage: swap-window CONTROL-ADDR (bind|listen|serve)

#[path = "../raw.rs"]
mod raw;

use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [control, mode] = &args[..] else { panic!("usage: swap-window CONTROL-ADDR MODE") };
    let socket = raw::bound(raw::listen_addrs()[0]).expect("bind");
    if mode == "listen" {
        raw::listen(&socket).expect("listen");
    }
    println!("[swap-window] holding the address; waiting for the control connection to close");
    let mut control = std::net::TcpStream::connect(control).expect("the control connection");
    let _ = control.read_to_end(&mut Vec::new());
    if mode != "serve" {
        panic!("trapping before serving anyone, on purpose");
    }
    raw::listen(&socket).expect("listen");
    loop {
        let (_socket, input, output) = raw::accept(&socket).expect("accept");
        println!("[swap-window] client connected");
        raw::echo(&input, &output);
    }
}
