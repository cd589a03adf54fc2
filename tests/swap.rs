//! Swapping guests: echo servers from other toolchains run on this host and
//! pass the same echo checks, and this project's guests run unchanged on the
//! official wasmtime CLI.

use crate::echo::{every_traffic_shape, reset};
use crate::support::guests::{default_guest, skipped, test_guest, tool};
use crate::support::{assert_echoes, connect, host_command, Host};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[test]
fn the_rust_std_guest_echoes() {
    let (_host, addr) = Host::serve(Some(&test_guest("echo-std")));
    every_traffic_shape(addr);
}

#[test]
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
    // A client that resets before accept() returns: wasi-libc's accept()
    // aborts the guest (the raw guest reports it and carries on)...
    reset(connect(addr));
    let restart = host.wait_for("restarting it in");
    assert!(restart.contains("(in abort <- tcp_accept4 <- accept)"), "{restart}");
    // ...and the host starts it again.
    every_traffic_shape(host.nth_listen_addr(2));
}

/// Builds `guests/python` with componentize-py into target/guests.
fn python_guest() -> Option<PathBuf> {
    let componentize_py = tool("componentize-py", "COMPONENTIZE_PY")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/guests/echo-python.wasm");
    let status = Command::new("bash")
        .arg(root.join("guests/python/build.sh"))
        .arg(&out)
        .env("COMPONENTIZE_PY", componentize_py)
        .status()
        .expect("running guests/python/build.sh");
    assert!(status.success(), "building the Python guest failed");
    Some(out)
}

#[test]
fn the_python_guest_echoes() {
    let Some(guest) = python_guest() else { return };
    let (host, addr) = Host::serve(Some(&guest));
    every_traffic_shape(addr);
    // A client that resets mid-stream ends that client only.
    reset(connect(addr));
    assert_echoes(addr, b"still here");
    drop(host);
}

/// Compiling a large guest takes seconds; Ctrl-C during it stops the host
/// at once, before the guest ever runs.
#[test]
fn sigint_while_a_large_guest_compiles_stops_at_once() {
    let Some(guest) = python_guest() else { return };
    let host = Host::start(&["--listen", "127.0.0.1:0", "--no-cache", guest.to_str().unwrap()]);
    host.wait_for("compiling");
    host.signal(libc::SIGINT);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("SIGINT received"), "{output}");
    assert!(!output.contains("running ") && !output.contains("compiled "), "{output}");
}

/// Builds `guests/js` with componentize-js (installed by `npm ci` in
/// guests/js) into target/guests.
fn javascript_guest() -> Option<PathBuf> {
    let node = tool("node", "NODE")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("guests/js/node_modules/@bytecodealliance/componentize-js").is_dir() {
        let why = "componentize-js is not installed (run `npm ci` in guests/js, or .ci/run)";
        assert!(std::env::var_os("REQUIRE_TOOLCHAINS").is_none(), "{why}");
        skipped(why);
        return None;
    }
    let out = root.join("target/guests/echo-js.wasm");
    let status = Command::new(node)
        .arg(root.join("guests/js/build.mjs"))
        .arg(&out)
        .status()
        .expect("running guests/js/build.mjs");
    assert!(status.success(), "building the JavaScript guest failed");
    Some(out)
}

#[test]
fn the_javascript_guest_echoes() {
    let Some(guest) = javascript_guest() else { return };
    let (_host, addr) = Host::serve(Some(&guest));
    every_traffic_shape(addr);
    reset(connect(addr));
    assert_echoes(addr, b"still here");
}

/// The official CLI, granting the whole network, running `guest` on a
/// fresh loopback port.
struct WasmtimeCli {
    child: Child,
    addr: SocketAddr,
}

impl WasmtimeCli {
    fn start(wasmtime: &Path, guest: &Path) -> WasmtimeCli {
        // The CLI prints no address, so pick a free port for it.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(wasmtime)
            .args(["run", "-S", "inherit-network", "--env", &format!("LISTEN_ADDR={addr}")])
            .arg(guest)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting wasmtime");
        WasmtimeCli { child, addr }
    }
}

impl Drop for WasmtimeCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn our_guests_run_unchanged_on_the_wasmtime_cli() {
    let Some(wasmtime) = tool("wasmtime", "WASMTIME") else { return };
    for guest in [default_guest(), test_guest("guest_iterative"), test_guest("echo-std")] {
        let cli = WasmtimeCli::start(&wasmtime, &guest);
        every_traffic_shape(cli.addr);
    }
}

/// A guest file is compiled once: the next start loads the compiled code
/// from the cache, and `--no-cache` compiles it again and keeps nothing.
#[test]
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
