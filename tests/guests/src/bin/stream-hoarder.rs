//! Accepts clients and drops each `tcp-socket` at once, keeping only its
//! input and output streams: the connection stays open through them. The
//! socket cap must count the connection, not the socket handle.

#[path = "../raw.rs"]
mod raw;

fn main() {
    let listener = raw::listener(raw::listen_addrs()[0]).expect("listen");
    let mut held = Vec::new();
    loop {
        let (socket, input, output) = raw::accept(&listener).expect("accept");
        drop(socket);
        held.push((input, output));
        println!("holding {} connections through their streams alone", held.len());
    }
}
