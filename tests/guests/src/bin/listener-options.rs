//! A guest for the listener-options test, by its environment's MODE:
//!
//! - `report` (the default): serves the granted address (a listener the
//!   host keeps, lent to it) with a backlog of 128, echoing each client
//!   and printing the options of each client's socket as it reads them;
//! - `poison`: binds the same address and sets every option a guest can
//!   to a value no one wants (hop limit 1, one-byte buffers, a one-second
//!   keep-alive, a backlog of 1), then traps before it listens: a swap
//!   that fails, leaving whatever it can behind;
//! - `poison-listen`: the same, but listens (and so takes over) and
//!   serves, until a clean guest is swapped in for it.

#[path = "../raw.rs"]
mod raw;

use wasi::sockets::tcp::TcpSocket;

fn main() {
    let addr = raw::listen_addrs()[0];
    match std::env::var("MODE").as_deref() {
        Ok("poison") => {
            let socket = poisoned(addr);
            println!("poison: bound with {}", options(&socket));
            panic!("poison: trapping after setting every option");
        }
        Ok("poison-listen") => {
            let socket = poisoned(addr);
            raw::listen(&socket).expect("listen");
            println!("poison: listening with {}", options(&socket));
            serve(&socket);
        }
        _ => {
            let socket = raw::bound(addr).expect("bind");
            socket.set_listen_backlog_size(128).expect("backlog");
            raw::listen(&socket).expect("listen");
            println!("report: listening");
            serve(&socket);
        }
    }
}

/// The granted address, bound, with every option set as no one wants it.
fn poisoned(addr: std::net::SocketAddr) -> TcpSocket {
    let socket = raw::bound(addr).expect("bind");
    socket.set_hop_limit(1).expect("hop limit");
    socket.set_receive_buffer_size(1).expect("receive buffer");
    socket.set_send_buffer_size(1).expect("send buffer");
    socket.set_keep_alive_enabled(true).expect("keep-alive");
    socket.set_keep_alive_idle_time(1_000_000_000).expect("keep-alive idle");
    socket.set_listen_backlog_size(1).expect("backlog");
    socket
}

fn serve(listener: &TcpSocket) -> ! {
    loop {
        let (client, input, output) = raw::accept(listener).expect("accept");
        println!("accepted a client with {}", options(&client));
        raw::echo(&input, &output);
        drop((input, output, client));
    }
}

/// The options as the guest reads them back.
fn options(socket: &TcpSocket) -> String {
    format!(
        "hop-limit={} keep-alive={} receive-buffer={} send-buffer={}",
        socket.hop_limit().map_or(0, u64::from),
        socket.keep_alive_enabled().unwrap_or(false),
        socket.receive_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    )
}
