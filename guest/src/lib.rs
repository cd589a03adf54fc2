//! The echo server, serving many clients at once: step 2 of the lesson.
//!
//! Step 1 (`guests/lesson/step1/`) is the study notes' server: it blocks in accept(),
//! then in recv() for one client, so a second client waits in the backlog
//! until the first leaves. The textbook's next chapter fixes that with
//! `select()`/`WSAPoll()`: wait for *any* socket to be ready, then handle
//! just that one. In WASI 0.2 that wait is `wasi:io/poll.poll` over a list
//! of pollables: the listener's, and one per connection.
//!
//! Run it (terminal 1), then talk to it from several terminals at once:
//!
//! ```text
//! cargo run -p host                  # the host embeds this guest
//! nc 127.0.0.1 9000                  # type a line: it comes back
//! ```

mod conn;
mod net;

wit_bindgen::generate!({
    path: "../wit",
    world: "echo-server",
    generate_all,
});

use conn::{Connection, Progress};
use wasi::io::poll::{poll, Pollable};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::tcp::TcpSocket;

/// The study notes' `SERVERPORT`, used when the host passes no `LISTEN_ADDR`.
const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:9000";

/// WinSock's `SOMAXCONN`: "as many pending connections as the system allows".
/// wasi:sockets takes a number; the kernel caps it at its own limit
/// (`net.core.somaxconn`).
const SOMAXCONN: u64 = 4096;

struct EchoServer;

impl exports::wasi::cli::run::Guest for EchoServer {
    fn run() -> Result<(), ()> {
        // WSAStartup(): not needed; the host grants the network.
        let network = instance_network();

        // SOCKADDR_IN serveraddr: one address, or several (IPv4 and IPv6).
        let addrs = net::listen_addrs(DEFAULT_LISTEN_ADDR).or_else(quit("LISTEN_ADDR"))?;

        // socket(), bind(), listen() for each address: exactly as in step 1.
        let mut listeners = Vec::new();
        for addr in addrs {
            let listen_sock = net::socket(addr).or_else(quit("socket()"))?;
            net::bind(&listen_sock, &network, addr).or_else(quit("bind()"))?;
            net::listen(&listen_sock, SOMAXCONN).or_else(quit("listen()"))?;
            println!("[TCP server] listening on {addr}");
            listeners.push(Listener { ready: listen_sock.subscribe(), socket: listen_sock });
        }
        let mut clients: Vec<Connection> = Vec::new();

        loop {
            // WSAPoll(): wait until a listener or any client is ready. The
            // first entries are the listeners; then entry L + i is
            // clients[i], waiting either to read (recv) or to write (send).
            let mut waiting: Vec<&Pollable> = Vec::with_capacity(listeners.len() + clients.len());
            waiting.extend(listeners.iter().map(|listener| &listener.ready));
            waiting.extend(clients.iter().map(Connection::pollable));
            let ready = poll(&waiting);

            let mut finished = false;
            for index in ready {
                let index = index as usize;
                match index.checked_sub(listeners.len()) {
                    // accept(): take every client that is waiting.
                    None => accept_all(&listeners[index].socket, &mut clients),
                    // recv() and send() for one client, as far as it can
                    // go without waiting.
                    Some(i) => finished |= clients[i].on_ready() == Progress::Done,
                }
            }

            // closesocket() for every client that is done: dropping a
            // `Connection` drops its streams, then its socket.
            if finished {
                clients.retain(|client| {
                    let done = client.is_done();
                    if done {
                        println!("[TCP server] client disconnected: {}", client.peer);
                    }
                    !done
                });
            }
        }
    }
}

/// A listening socket and the pollable that says a client is waiting.
/// The pollable belongs to the socket, so it is declared (and dropped) first.
struct Listener {
    ready: Pollable,
    socket: TcpSocket,
}

/// accept() until no client is waiting. A client that left before we got
/// to it is reported and skipped, never fatal.
fn accept_all(listen_sock: &TcpSocket, clients: &mut Vec<Connection>) {
    loop {
        match net::try_accept(listen_sock) {
            Ok(Some(accepted)) => {
                println!("[TCP server] client connected: {}", accepted.peer);
                clients.push(Connection::new(accepted));
            }
            Ok(None) => return,
            Err(e) => return eprintln!("[TCP server] accept() failed: {e}"),
        }
    }
}

/// The study notes' `err_quit`: report a fatal error, then stop the server.
fn quit<T>(call: &'static str) -> impl FnOnce(String) -> Result<T, ()> {
    move |e| {
        eprintln!("[TCP server] {call} failed: {e}");
        Err(())
    }
}

export!(EchoServer);
