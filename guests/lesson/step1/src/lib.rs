//! The textbook WinSock echo server, rebuilt on `wasi:sockets`.
//!
//! Read `run` from top to bottom: it is the study notes' `main()`, one step after
//! another, each step named by the WinSock call it replaces. The two-phase
//! details live in `net.rs`, the waiting in `blocking.rs`, so that this
//! file stays the lesson.
//!
//! Run it (terminal 1), then talk to it (terminal 2):
//!
//! ```text
//! cargo build -p guest-iterative --release --target wasm32-wasip2
//! cargo run -p host -- target/wasm32-wasip2/release/guest_iterative.wasm
//! nc 127.0.0.1 9000                  # type a line: it comes back
//! ```
//!
//! This is step 1 of the lesson. It serves one client at a time, exactly
//! like the study notes' server: a second client waits in the listen backlog until the
//! first one leaves. Step 2, the default guest (`guest/`), serves them all.

mod blocking;
// The socket set-up is the same as in the default guest's.
#[path = "../../../../guest/src/net.rs"]
mod net;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "echo-server",
    generate_all,
});

use blocking::Recv;
use net::Accepted;
use wasi::sockets::instance_network::instance_network;

/// The study notes' `SERVERPORT`, used when the host passes no `LISTEN_ADDR`.
const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:9000";

/// The study notes' `BUFSIZE`: the most one `recv()` asks for.
const BUFSIZE: u64 = 512;

/// WinSock's `SOMAXCONN`: "as many pending connections as the system allows".
/// wasi:sockets takes a number; the kernel caps it at its own limit
/// (`net.core.somaxconn`).
const SOMAXCONN: u64 = 4096;

struct EchoServer;

impl exports::wasi::cli::run::Guest for EchoServer {
    fn run() -> Result<(), ()> {
        // WSAStartup(): not needed. There is no socket library to load; the
        // host grants this component a network when it instantiates it.
        let network = instance_network();

        // SOCKADDR_IN serveraddr = { AF_INET, INADDR_ANY, htons(SERVERPORT) }
        // (The host may grant several addresses; one blocking accept()
        // can only wait on one of them, so this server takes the first.)
        let addrs = net::listen_addrs(DEFAULT_LISTEN_ADDR).or_else(quit("LISTEN_ADDR"))?;
        let addr = addrs[0];

        // socket(AF_INET, SOCK_STREAM, 0)
        let listen_sock = net::socket(addr).or_else(quit("socket()"))?;

        // bind(listen_sock, &serveraddr): start-bind, then finish-bind.
        net::bind(&listen_sock, &network, addr).or_else(quit("bind()"))?;

        // listen(listen_sock, SOMAXCONN): start-listen, then finish-listen.
        net::listen(&listen_sock, SOMAXCONN).or_else(quit("listen()"))?;
        println!("[TCP server] listening on {addr}");

        loop {
            // accept(listen_sock, &clientaddr, &addrlen): wait on the
            // listener's pollable (the blocking part), then accept.
            let client = match blocking::accept(&listen_sock) {
                Ok(client) => client,
                Err(e) => {
                    // A client that reset before we accepted it: not fatal.
                    err_display("accept()", e);
                    continue;
                }
            };
            let (ip, port) = (client.peer.ip(), client.peer.port());
            println!("\n[TCP server] client connected: IP address={ip} port={port}");

            echo(&client);

            // closesocket(client_sock): drop its streams, then its socket
            // (`net::Accepted` declares them in that order).
            drop(client);
            println!("[TCP server] client disconnected: IP address={ip} port={port}");
        }
    }
}

/// The recv()/send() loop for one client, until it closes or fails.
fn echo(client: &Accepted) {
    loop {
        // recv(client_sock, buf, BUFSIZE, 0)
        let buf = match blocking::recv(client, BUFSIZE) {
            Recv::Data(buf) => buf,
            // recv() == 0: the client closed its side.
            Recv::Closed => return,
            // SOCKET_ERROR, e.g. the client reset the connection.
            Recv::Failed(e) => return err_display("recv()", e),
        };
        println!("[TCP/{}] {}", client.peer, blocking::printable(&buf));

        // send(client_sock, buf, retval, 0): all of it, then flush.
        if let Err(e) = blocking::send_all(client, &buf) {
            return err_display("send()", e);
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

/// The study notes' `err_display`: report an error and carry on.
fn err_display(call: &str, e: String) {
    eprintln!("[TCP server] {call} failed: {e}");
}

export!(EchoServer);
