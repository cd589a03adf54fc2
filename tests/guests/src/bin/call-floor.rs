//! What a call from a guest into its host costs on the runtime it runs on,
//! timed from inside the guest: the benchmark's floor (`bench --floor`),
//! what any guest pays per call and per pollable, however fast the host's
//! own work is.
//!
//! It accepts one client, which sends nothing, then times, with the
//! monotonic clock, many calls of each kind in a row:
//! - `monotonic-clock.now`: a call with nothing to lift or lower;
//! - `output-stream.check-write`: a call on a borrowed stream, as each of
//!   an echo's read, check-write, write and flush is;
//! - `poll` over N pollables of which one is ready (the client's output:
//!   room to write) and the rest are not (its input: nothing sent), for N
//!   = 1, 10, 100 and 1 000: the default guest's `poll` with one client
//!   ready among N, its shape under a light load.
//!
//! Each measure is timed five times; it prints the fastest, one line each:
//! `floor <measure> <nanoseconds per call>`, then `floor done`.

#[path = "../raw.rs"]
mod raw;

use wasi::clocks::monotonic_clock::now;
use wasi::io::poll::poll;

/// Calls timed in each of the five tries (fewer for the longer polls):
/// enough that the two clock reads around them do not count.
const CALLS: u64 = 20_000;

fn main() {
    let listener = raw::listener(raw::listen_addrs()[0]).expect("listen");
    println!("floor listening");
    let (_client, input, output) = raw::accept(&listener).expect("accept the client");

    report("now", fastest(CALLS, || std::hint::black_box(now())));
    report("check-write", fastest(CALLS, || output.check_write().expect("check-write")));

    let ready = output.subscribe();
    for n in [1usize, 10, 100, 1000] {
        let idle: Vec<_> = (1..n).map(|_| input.subscribe()).collect();
        let mut list: Vec<_> = idle.iter().collect();
        list.push(&ready);
        let per_call = fastest(CALLS / n as u64 + 1_000, || {
            let answer = poll(&list);
            assert_eq!(answer, [n as u32 - 1], "only the output is ready");
        });
        report(&format!("poll-{n}"), per_call);
    }
    println!("floor done");
}

/// The fastest of five tries of `calls` calls, in nanoseconds per call.
fn fastest<T>(calls: u64, mut call: impl FnMut() -> T) -> f64 {
    (0..5)
        .map(|_| {
            let started = now();
            for _ in 0..calls {
                call();
            }
            (now() - started) as f64 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(measure: &str, ns: f64) {
    println!("floor {measure} {ns:.1}");
}
