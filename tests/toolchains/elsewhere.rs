//! Echo servers from other toolchains (Python, JavaScript) on this host,
//! and this project's guests on the official wasmtime CLI: each passes the
//! same echo checks as our guests do on this host.

use crate::support::guests::{default_guest, test_guest};
use crate::support::traffic::{every_traffic_shape, reset};
use crate::support::{assert_echoes, connect, Host};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds `guests/python` with componentize-py into target/guests: once
/// per run, whichever test asks first (the others wait for it), into a
/// file of its own renamed into place, so that no host reads a half-written
/// one.
fn python_guest(componentize_py: &Path) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_atomically("echo-python.wasm", |out| {
                Command::new("bash")
                    .arg(root().join("guests/python/build.sh"))
                    .arg(out)
                    .env("COMPONENTIZE_PY", componentize_py)
                    .status()
                    .expect("running guests/python/build.sh")
            })
        })
        .clone()
}

/// Builds target/guests/`name` with `build`, which writes the file it is
/// given: a temporary one, renamed into place once complete.
fn build_atomically(name: &str, build: impl FnOnce(&Path) -> std::process::ExitStatus) -> PathBuf {
    let out = root().join("target/guests").join(name);
    let partial = out.with_extension(format!("partial-{}", std::process::id()));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    assert!(build(&partial).success(), "building {name} failed");
    std::fs::rename(&partial, &out).unwrap();
    out
}

pub fn the_python_guest_echoes(componentize_py: &Path) {
    let guest = python_guest(componentize_py);
    let (host, addr) = Host::serve(Some(&guest));
    every_traffic_shape(addr);
    // A client that resets mid-stream ends that client only.
    reset(connect(addr));
    assert_echoes(addr, b"still here");
    assert_echoes(addr, b"still here");
    drop(host);
}

/// Compiling a large guest takes seconds; Ctrl-C during it stops the host
/// at once, before the guest ever runs.
pub fn sigint_while_a_large_guest_compiles_stops_at_once(componentize_py: &Path) {
    let guest = python_guest(componentize_py);
    let host = Host::start(&["--listen", "127.0.0.1:0", "--no-cache", guest.to_str().unwrap()]);
    host.wait_for("compiling");
    host.signal(libc::SIGINT);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("SIGINT received"), "{output}");
    assert!(!output.contains("running ") && !output.contains("compiled "), "{output}");
}

/// componentize-js, where `npm ci` in guests/js installs it.
pub fn componentize_js() -> Option<PathBuf> {
    let dir = root().join("guests/js/node_modules/@bytecodealliance/componentize-js");
    dir.is_dir().then_some(dir)
}

/// Builds `guests/js` with componentize-js into target/guests.
pub fn the_javascript_guest_echoes(node: &Path) {
    let guest = build_atomically("echo-js.wasm", |out| {
        Command::new(node)
            .arg(root().join("guests/js/build.mjs"))
            .arg(out)
            .status()
            .expect("running guests/js/build.mjs")
    });
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
    _reserved: crate::support::Reserved,
}

impl WasmtimeCli {
    fn start(wasmtime: &Path, guest: &Path) -> WasmtimeCli {
        // The CLI prints no address, so give it one that stays reserved
        // for it (its bind, like the host's, allows that).
        let reserved = crate::support::reserved_addr();
        let addr = reserved.addr;
        let child = Command::new(wasmtime)
            .args(["run", "-S", "inherit-network", "--env", &format!("LISTEN_ADDR={addr}")])
            .arg(guest)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting wasmtime");
        WasmtimeCli { child, addr, _reserved: reserved }
    }
}

impl Drop for WasmtimeCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn our_guests_run_unchanged_on_the_wasmtime_cli(wasmtime: &Path) {
    for guest in [default_guest(), test_guest("guest_iterative"), test_guest("echo-std")] {
        let cli = WasmtimeCli::start(wasmtime, &guest);
        every_traffic_shape(cli.addr);
    }
}
