//! Accepts N clients (its argument), writes to each until the host no
//! longer takes more at once (the client reads nothing, so the rest of
//! the last write is left to the host to send in the background), then
//! drops the streams and the socket: it lets go of the connection with a
//! send still under way. Then it waits for ever, or, with `then-trap`,
//! traps, so that the instance ends.

#[path = "../raw.rs"]
mod raw;

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::poll;

/// A background send that makes no progress for this long is stuck: the
/// system took what it could (on a busy machine it may take some of its
/// queue later, and the rest of a short last write with it).
const STUCK_AFTER_NS: u64 = 500_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|n| n.parse().ok()).expect("a number of clients");
    let then_trap = args.next().as_deref() == Some("then-trap");
    let listener = raw::listener(raw::listen_addrs()[0]).expect("listen");
    let chunk = vec![b'x'; 64 * 1024];
    for i in 1..=clients {
        let (socket, input, output) = raw::accept(&listener).expect("accept");
        let mut written = 0;
        loop {
            match output.check_write().expect("check-write") {
                // Before the first write, the host may not know yet that
                // the connection is writable: wait until it is.
                0 if written == 0 => output.subscribe().block(),
                // After writes, 0 means the host is sending the rest of
                // the last one in the background: let go once it is stuck
                // (writable again means it finished: write more).
                0 => {
                    let (writable, waited) =
                        (output.subscribe(), subscribe_duration(STUCK_AFTER_NS));
                    if !poll(&[&writable, &waited]).contains(&0) {
                        break;
                    }
                }
                n => {
                    let n = (n as usize).min(chunk.len());
                    output.write(&chunk[..n]).expect("write");
                    written += n;
                }
            }
        }
        drop((input, output, socket));
        println!("let go of client {i} after writing {written} bytes");
    }
    println!("let go of {clients} clients");
    if then_trap {
        panic!("trapping with sends under way");
    }
    loop {
        let _ = raw::accept(&listener);
    }
}
