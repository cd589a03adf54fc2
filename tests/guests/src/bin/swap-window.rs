//! A guest swapped in that holds the granted address for a while before it
//! decides: it binds the first LISTEN_ADDR (and, in mode `listen`, listens
//! there too, and looks once for a client, as a server's poll does),
//! connects to the test's control address (its first argument) and waits
//! until the test closes that connection. Then, in modes `bind`
//! and `listen`, it traps (the swap fails); in mode `serve` it listens (if
//! it has not yet) and echoes clients one at a time. In mode `serve-now` it
//! listens and serves at once, there only (so with two addresses granted,
//! the swap never completes), with no control connection.
//!
//! Usage: swap-window CONTROL-ADDR (bind|listen|serve|serve-now)

#[path = "../raw.rs"]
mod raw;

use std::io::Read;
use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::sockets::tcp::TcpSocket;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [control, mode] = &args[..] else { panic!("usage: swap-window CONTROL-ADDR MODE") };
    let socket = raw::bound(raw::listen_addrs()[0]).expect("bind");
    if mode == "serve-now" {
        serve(&socket);
    }
    if mode == "listen" {
        raw::listen(&socket).expect("listen");
        let client_waiting = socket.subscribe();
        wasi::io::poll::poll(&[&client_waiting, &subscribe_duration(1_000_000)]);
    }
    println!("[swap-window] holding the address; waiting for the control connection to close");
    let mut control = std::net::TcpStream::connect(control).expect("the control connection");
    let _ = control.read_to_end(&mut Vec::new());
    if mode != "serve" {
        panic!("trapping before serving anyone, on purpose");
    }
    serve(&socket);
}

fn serve(socket: &TcpSocket) -> ! {
    raw::listen(socket).expect("listen");
    println!("[swap-window] listening");
    loop {
        let (_socket, input, output) = raw::accept(socket).expect("accept");
        println!("[swap-window] client connected");
        raw::echo(&input, &output);
    }
}
