//! The textbook's echo client, rebuilt on `wasi:sockets`: step 3 of the
//! lesson. Read `run` from top to bottom: socket(), connect(), then for each
//! message send() and recvn(), then closesocket(), each step named by the
//! WinSock call it replaces. The waiting lives in `io.rs`.
//!
//! Each message goes out with a length in front (4 bytes, big-endian), the
//! way the textbook frames variable-length data: TCP carries bytes, not
//! messages, so the reader needs the length to know where a message ends,
//! and `recvn()` reads exactly that many bytes, however they arrive.
//!
//! Run a server (terminal 1), then the client (terminal 2): the host
//! refuses the connection unless `--allow-connect` grants the address.
//!
//! ```text
//! cargo run -p host
//! cargo build -p echo-client --release --target wasm32-wasip2
//! cargo run -p host -- --no-listen --allow-connect 127.0.0.1:9000 \
//!   target/wasm32-wasip2/release/echo_client.wasm -- hello "a longer message"
//! ```

mod io;
// socket() is the same as the servers'.
#[path = "../../../../guest/src/net.rs"]
#[allow(dead_code)]
mod net;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "echo-client",
    generate_all,
});

use wasi::sockets::instance_network::instance_network;

/// The textbook's `SERVERIP` and `SERVERPORT`, used when the host passes
/// no `SERVER_ADDR`.
const SERVER_ADDR: &str = "127.0.0.1:9000";

struct EchoClient;

impl exports::wasi::cli::run::Guest for EchoClient {
    fn run() -> Result<(), ()> {
        // WSAStartup(): not needed; the host grants the network.
        let network = instance_network();

        // getaddrinfo(SERVERNAME, SERVERPORT): the addresses to try, of
        // any family (a name needs --allow-dns; an address is itself).
        let addrs = io::server_addrs(&network, &server_addr()).or_else(quit("getaddrinfo()"))?;

        // for each address: socket(ai_family, SOCK_STREAM, 0), then
        // connect(sock, ai_addr, ai_addrlen); the first that connects wins.
        let (sock, conn, addr) = io::connect_any(&network, &addrs).or_else(quit("connect()"))?;
        println!("[TCP client] connected to {addr}");

        // The messages to send: the guest's arguments after its name.
        for message in std::env::args().skip(1) {
            // send(): the length, then the bytes, in one go.
            let len =
                u32::try_from(message.len()).or_else(|_| quit("send()")("too long".into()))?;
            let framed = [&len.to_be_bytes()[..], message.as_bytes()].concat();
            io::send_all(&conn, &framed).or_else(quit("send()"))?;
            println!("[TCP client] sent {} + 4 bytes", message.len());

            // recvn(): exactly the 4 bytes of the length, then exactly that many.
            let header = io::recvn(&conn, 4).or_else(quit("recvn()"))?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let body = io::recvn(&conn, len as usize).or_else(quit("recvn()"))?;
            println!("[TCP client] received {len} bytes: {}", String::from_utf8_lossy(&body));
        }

        // closesocket(sock): the streams, then the socket (field order).
        drop(conn);
        drop(sock);
        Ok(())
    }
}

/// `SERVER_ADDR` from the environment the host gives (`--env`), or the
/// default: `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
fn server_addr() -> String {
    let env = wasi::cli::environment::get_environment();
    env.into_iter().find(|(key, _)| key == "SERVER_ADDR").map_or(SERVER_ADDR.into(), |(_, v)| v)
}

/// The textbook's `err_quit`: report a fatal error, then stop.
fn quit<T>(call: &'static str) -> impl FnOnce(String) -> Result<T, ()> {
    move |e| {
        eprintln!("[TCP client] {call} failed: {e}");
        Err(())
    }
}

export!(EchoClient);
