//! Swapping guests: a Rust std echo server runs on this host and passes the
//! same echo checks, and a guest file's compiled code is cached. (Guests
//! from other toolchains, and ours on the wasmtime CLI, are in
//! `tests/toolchains/`: they need tools from outside Rust.)

use crate::support::guests::test_guest;
use crate::support::traffic::{every_traffic_shape, reset};
use crate::support::{connect, host_command, Host};
use std::io::Write;
use std::process::Command;

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

/// Compiled code another user planted in the cache is never run, even
/// after the directory is made private: while the cache directory is open
/// to others the host refuses it (and says `chmod go-w`); meanwhile user
/// `nobody` plants, under the name of the operator's guest, another
/// guest's compiled code (one that traps at once). Once the operator has
/// run the chmod, the host finds the entry is not its user's, removes it,
/// compiles the guest again, and the guest that serves is the real one.
#[cfg(unix)]
fn compiled_code_planted_by_another_user_is_never_run() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let (guest, trap) = (test_guest("echo-std"), test_guest("trap"));
    let compiled_into = |dir: &std::path::Path, guest: &std::path::Path| {
        let cache = ["--listen", "127.0.0.1:0", "--cache-dir", dir.to_str().unwrap()];
        let host = Host::start(&[&cache[..], &[guest.to_str().unwrap()]].concat());
        host.wait_for("cached in");
        drop(host);
        let entry = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
        (entry.file_name().unwrap().to_owned(), std::fs::read(&entry).unwrap())
    };
    let (names, codes) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (name, _) = compiled_into(names.path(), &guest);
    let (_, trap_code) = compiled_into(codes.path(), &trap);

    let parent = tempfile::tempdir().unwrap();
    mode(parent.path(), 0o755);
    let cache = parent.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    mode(&cache, 0o777);
    let cache_dir = cache.to_str().unwrap();
    let with_cache = ["--listen", "127.0.0.1:0", "--cache-dir", cache_dir, guest.to_str().unwrap()];
    let host = Host::start(&with_cache);
    host.wait_for(&format!("not caching compiled guests in {cache_dir}: others may write to it"));
    host.wait_for("chmod go-w it");
    drop(host);

    let mut plant = Command::new("sh");
    plant.args(["-c", "cat > \"$0\"", cache.join(&name).to_str().unwrap()]);
    plant.uid(65534).gid(65534).stdin(std::process::Stdio::piped());
    let mut planter = plant.spawn().unwrap();
    planter.stdin.take().unwrap().write_all(&trap_code).unwrap();
    assert!(planter.wait().unwrap().success(), "user nobody could not plant the entry");
    mode(&cache, 0o755);

    let host = Host::start(&with_cache);
    let removed = host.wait_for("removed the compiled copy of");
    assert!(removed.contains("it belongs to user 65534"), "{removed}");
    every_traffic_shape(host.listen_addr());
    assert!(!host.output().contains("trapped"), "{}", host.report());
    use std::os::unix::fs::MetadataExt;
    let entry = std::fs::metadata(cache.join(&name)).unwrap();
    assert_eq!(entry.uid(), 0, "the entry now is the host's own");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        #[cfg(unix)]
        compiled_code_planted_by_another_user_is_never_run [needs crate::support::need::root()],
        the_rust_std_guest_echoes,
        the_rust_std_guest_dies_on_an_early_reset_and_restart_keeps_it_up,
        a_guest_file_is_compiled_once_then_loaded_from_the_cache,
    ]
}
