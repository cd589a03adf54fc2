//! Polls one client's input three ways in turn, the order in which a
//! waker left with the runtime could be lost (`host/src/sockets/read_wake.rs`):
//!
//! 1. with the listener, host pollables only: the client has sent nothing,
//!    so its input is armed, until a second client arrives;
//! 2. with a 10 ms timer, a list the host answers the ordinary way (which
//!    leaves another waker with the runtime), until the timer fires;
//! 3. alone, host pollables only again: the client then sends a line,
//!    which this guest echoes. A poll that still believed step 1's answer
//!    would never wake.

#[path = "../raw.rs"]
mod raw;

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::io::poll::poll;

fn main() {
    let listener = raw::listener(raw::listen_addrs()[0]).expect("listen");
    let (_a, input, output) = raw::accept(&listener).expect("accept the first client");
    let data = input.subscribe();
    let waiting = listener.subscribe();
    println!("[mixed] step 1: the first client and the listener");
    let ready = poll(&[&data, &waiting]);
    assert_eq!(ready, vec![1], "the listener, not the silent client");
    let _b = raw::accept(&listener).expect("accept the second client");
    let timer = subscribe_duration(10_000_000);
    let ready = poll(&[&data, &timer]);
    assert_eq!(ready, vec![1], "the timer, not the silent client");
    println!("[mixed] step 3: the first client alone");
    poll(&[&data]);
    let line = input.blocking_read(64).expect("read");
    output.blocking_write_and_flush(&line).expect("echo");
    println!("[mixed] echoed");
}
