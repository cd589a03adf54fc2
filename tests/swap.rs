//! Swapping guests: a Rust std echo server runs on this host and passes the
//! same echo checks, and a guest file's compiled code is cached. (Guests
//! from other toolchains, and ours on the wasmtime CLI, are in
//! `tests/toolchains/`: they need tools from outside Rust.)

use crate::support::guests::test_guest;
use crate::support::traffic::{every_traffic_shape, reset};
use crate::support::{connect, host_command, Host};

fn the_rust_std_guest_echoes() {
    let (_host, addr) = Host::serve(Some(&test_guest("echo-std")));
    every_traffic_shape(addr);
}

fn the_rust_std_guest_dies_on_an_early_reset_and_restart_keeps_it_up() {
    let guest = test_guest("echo-std");
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart",
        "on-failure",
        guest.to_str().unwrap(),
    ]);
    let addr = host.listen_addr();
    // A client that resets before accept() returns (the host is stopped
    // meanwhile, so it always does): wasi-libc's accept() aborts the guest
    // (the raw guest reports it and carries on)...
    host.stopped_while(|| reset(connect(addr)));
    let restart = host.wait_for("restarting it in");
    assert!(restart.contains("(in abort <- tcp_accept4 <- accept)"), "{restart}");
    // ...and the host starts it again.
    every_traffic_shape(host.nth_listen_addr(2));
}

/// A guest file is compiled once: the next start loads the compiled code
/// from the cache, and `--no-cache` compiles it again and keeps nothing.
fn a_guest_file_is_compiled_once_then_loaded_from_the_cache() {
    let guest = test_guest("echo-std");
    let guest = guest.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let with_cache = ["--listen", "127.0.0.1:0", "--cache-dir", cache_dir, guest];

    let first = Host::start(&with_cache);
    every_traffic_shape(first.listen_addr());
    assert!(first.output().contains("cached in"), "{}", first.report());
    drop(first);
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(entries, 1, "one compiled guest in the cache");

    let second = Host::start(&with_cache);
    every_traffic_shape(second.listen_addr());
    let output = second.output();
    assert!(output.contains("compiled earlier") && !output.contains("cached in"), "{output}");
    drop(second);

    let unused = tempfile::tempdir().unwrap();
    let uncached = Host::start_command(host_command().env("XDG_CACHE_HOME", unused.path()).args([
        "--listen",
        "127.0.0.1:0",
        "--no-cache",
        guest,
    ]));
    every_traffic_shape(uncached.listen_addr());
    let output = uncached.output();
    assert!(!output.contains("compiled earlier") && !output.contains("cached in"), "{output}");
    assert_eq!(std::fs::read_dir(unused.path()).unwrap().count(), 0, "--no-cache wrote nothing");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        the_rust_std_guest_echoes,
        the_rust_std_guest_dies_on_an_early_reset_and_restart_keeps_it_up,
        a_guest_file_is_compiled_once_then_loaded_from_the_cache,
    ]
}
