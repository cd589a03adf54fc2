//! Echo servers from other toolchains (Python, JavaScript) on this host,
//! and this project's guests on the official wasmtime CLI: each passes the
//! same echo checks as our guests do on this host.

use crate::support::guests::{default_guest, test_guest};
use crate::support::traffic::{every_traffic_shape, reset};
use crate::support::{assert_echoes, connect, pattern, Host};
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
    BUILT.get_or_init(|| build_python("echo-python.wasm", &[], componentize_py)).clone()
}

fn build_python(name: &str, args: &[&str], componentize_py: &Path) -> PathBuf {
    build_atomically(name, |out| {
        Command::new("bash")
            .arg(root().join("guests/python/build.sh"))
            .args(args)
            .arg(out)
            .env("COMPONENTIZE_PY", componentize_py)
            .status()
            .expect("running guests/python/build.sh")
    })
}

/// `guest` one instance per client: every traffic shape, and three
/// clients at once, each served by its own instance.
fn serves_each_client_in_an_instance_of_its_own(guest: &Path) {
    let host = Host::start(&["--per-client", "--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    let addr = host.per_client_addr(1);
    every_traffic_shape(addr);
    let clients: Vec<_> = (0..3)
        .map(|seed| std::thread::spawn(move || assert_echoes(addr, &pattern(50_000, seed))))
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    host.wait_for("}: [");
}

/// The Python guest written for --per-client (stdin to stdout).
pub fn the_python_stdio_guest_serves_one_instance_per_client(componentize_py: &Path) {
    let guest = build_python("echo-stdio-python.wasm", &["--per-client"], componentize_py);
    serves_each_client_in_an_instance_of_its_own(&guest);
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

fn build_js(name: &str, args: &[&str], node: &Path) -> PathBuf {
    build_atomically(name, |out| {
        Command::new(node)
            .arg(root().join("guests/js/build.mjs"))
            .args(args)
            .arg(out)
            .status()
            .expect("running guests/js/build.mjs")
    })
}

/// The JavaScript guest written for --per-client (stdin to stdout).
pub fn the_javascript_stdio_guest_serves_one_instance_per_client(node: &Path) {
    let guest = build_js("echo-stdio-js.wasm", &["--per-client"], node);
    serves_each_client_in_an_instance_of_its_own(&guest);
}

/// Builds `guests/js` with componentize-js into target/guests.
pub fn the_javascript_guest_echoes(node: &Path) {
    let guest = build_js("echo-js.wasm", &[], node);
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

/// The lesson's per-client guest is a plain command: the wasmtime CLI runs
/// it with a pipe for stdin, and it copies the pipe to stdout.
pub fn the_per_client_guest_is_a_plain_command_on_the_wasmtime_cli(wasmtime: &Path) {
    use std::io::Write;
    let input = pattern(100_000, 7);
    let mut child = Command::new(wasmtime)
        .arg("run")
        .arg(test_guest("echo-stdio"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting wasmtime");
    let mut stdin = child.stdin.take().unwrap();
    let sent = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success());
    assert!(output.stdout == input, "wasmtime's stdout differs from its stdin");
}

/// A component the project did not write: K&R's `cat` (1.5.1), compiled
/// as the book prints it by Debian's clang with wasi-libc (WASI preview 1)
/// and wrapped into a component with wasmtime's own preview 1 adapter.
/// Served one instance per client, it echoes: stdio buffers, so each
/// client gets its bytes when it closes its side, as under inetd.
pub fn a_textbook_cat_in_c_serves_unchanged(clang: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("kr-cat.core.wasm");
    let compiled = Command::new(clang)
        .args(["--target=wasm32-wasi", "-O2", "-w", "-o"])
        .arg(&core)
        .arg(root().join("tests/guests/c/kr-cat.c"))
        .status()
        .expect("running clang");
    assert!(compiled.success(), "clang could not compile kr-cat.c for wasm32-wasi");
    let component = wit_component::ComponentEncoder::default()
        .module(&std::fs::read(&core).unwrap())
        .unwrap()
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .expect("wrapping the core module into a component");
    let guest = dir.path().join("kr-cat.wasm");
    std::fs::write(&guest, component).unwrap();
    let host = Host::start(&["--per-client", "--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    let addr = host.per_client_addr(1);
    let clients: Vec<_> = (0..3)
        .map(|seed| std::thread::spawn(move || assert_echoes(addr, &pattern(100_000, seed))))
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert_echoes(addr, b"hello, world\n");
}
