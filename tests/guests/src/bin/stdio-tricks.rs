//! A guest for `--per-client`: echoes stdin to stdout, and on a command
//! letter in what it reads, does what a broken or hostile guest would:
//!
//! - `!` traps (a panic); `M` allocates until the memory limit stops it;
//!   `S` spins for ever (the CPU budget stops it); `X` exits with a failure status (WASI 0.2 has only
//!   success and failure: the host sees 1);
//! - `W` writes 60 000 bytes in one non-blocking write, no flush, and
//!   returns at once: the host must still send them before it closes;
//! - `E` writes `REMOTE_ADDR=... REMOTE_PORT=... VARS=<names>` and a newline;
//! - `P` reads `/data/pipe` (a FIFO no one writes, in a granted directory:
//!   the read waits for ever, holding one of the host's threads for
//!   blocking work);
//! - `Z` floods stdout with 8 MiB writes that ignore check-write (a trap,
//!   says the spec); `Y` floods it for ever as check-write allows (for a
//!   client that never reads);
//! - `K` keeps what follows it in a static; `R` writes back what this
//!   instance keeps (`(nothing)` in a fresh one): one client's instance
//!   must never see another's memory.
//!
//! With the argument `work=N` it only echoes, after computing N thousand
//! rounds of a multiply-add for each read (a fixed amount of CPU, not of
//! time: for the benchmark's threads figure; its random bytes are no
//! commands).

use std::io::{Read, Write};
use std::sync::Mutex;

static KEPT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn main() {
    let work = std::env::args()
        .find_map(|a| a.strip_prefix("work=").and_then(|n| n.parse::<u64>().ok()))
        .unwrap_or(0);
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buffer = [0u8; 4096];
    loop {
        let n = match input.read(&mut buffer) {
            // The client closed its side: done.
            Ok(0) => return,
            Ok(n) => n,
            // The connection failed (a reset): end with a failure status.
            Err(_) => std::process::exit(1),
        };
        let got = &buffer[..n];
        if work > 0 {
            busy(work);
            if output.write_all(got).and_then(|()| output.flush()).is_err() {
                return;
            }
            continue;
        }
        if let Some(at) = got.iter().position(|&b| b == b'K') {
            *KEPT.lock().unwrap() = got[at + 1..].to_vec();
        }
        let reply: Vec<u8> = match got {
            _ if got.contains(&b'!') => panic!("this guest traps on '!'"),
            _ if got.contains(&b'M') => allocate_for_ever(),
            _ if got.contains(&b'S') => spin(),
            _ if got.contains(&b'X') => std::process::exit(3),
            _ if got.contains(&b'W') => return write_and_leave(),
            _ if got.contains(&b'P') => std::fs::read("/data/pipe").unwrap_or_default(),
            _ if got.contains(&b'Z') => flood_ignoring_check_write(),
            _ if got.contains(&b'Y') => return flood(&mut output),
            _ if got.contains(&b'E') => environment().into_bytes(),
            _ if got.contains(&b'R') => match KEPT.lock().unwrap().clone() {
                kept if kept.is_empty() => b"(nothing)".to_vec(),
                kept => kept,
            },
            _ => got.to_vec(),
        };
        if output.write_all(&reply).and_then(|()| output.flush()).is_err() {
            return;
        }
    }
}

fn environment() -> String {
    let get = |name: &str| std::env::var(name).unwrap_or_default();
    let names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    format!(
        "REMOTE_ADDR={} REMOTE_PORT={} VARS={}\n",
        get("REMOTE_ADDR"),
        get("REMOTE_PORT"),
        names.join(",")
    )
}

fn write_and_leave() {
    let stdout = wasi::cli::stdout::get_stdout();
    let bytes = vec![b'w'; 60_000];
    stdout.subscribe().block();
    assert!(stdout.check_write().unwrap() >= bytes.len() as u64);
    stdout.write(&bytes).unwrap();
}

fn flood_ignoring_check_write() -> ! {
    let stdout = wasi::cli::stdout::get_stdout();
    let chunk = vec![b'Z'; 8 << 20];
    loop {
        if stdout.write(&chunk).is_err() {
            std::process::exit(1);
        }
    }
}

fn flood(output: &mut impl Write) {
    let chunk = vec![b'Y'; 64 << 10];
    while output.write_all(&chunk).is_ok() {}
}

fn allocate_for_ever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn busy(thousands: u64) {
    let mut x: u64 = 0;
    for _ in 0..thousands * 1000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
