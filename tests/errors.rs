//! Bad input gets one clear line and a non-zero exit; never a panic, never
//! the host's own backtrace (even with RUST_BACKTRACE=1).

use crate::support::guests::test_guest;
use crate::support::{host_command, Host};
use std::path::Path;
use std::process::ExitStatus;

/// Runs the host with RUST_BACKTRACE=1 and returns its status and output
/// (on a port the system picks, unless `args` name an address).
fn run(args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = host_command();
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    Host::start_command(cmd.env("RUST_BACKTRACE", "1").args(args)).wait()
}

/// Exactly one line starts with "wasi-tcp-host: error:", and it says `expected`.
fn assert_fails_with(args: &[&str], expected: &str) -> String {
    let (status, output) = run(args);
    assert!(!status.success(), "expected failure\n{output}");
    let errors: Vec<&str> =
        output.lines().filter(|l| l.starts_with("wasi-tcp-host: error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected\n{output}");
    assert!(errors[0].contains(expected), "expected {expected:?} in {:?}", errors[0]);
    // (A Rust guest's panic message is the guest's output, not the host's.)
    let host_panicked =
        output.lines().any(|l| l.contains("panicked at") && !l.contains("tests/guests/"));
    assert!(!host_panicked, "the host panicked\n{output}");
    assert!(!output.contains("stack backtrace"), "a host backtrace was printed\n{output}");
    output
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn a_missing_file() {
    assert_fails_with(&["/no/such/guest.wasm"], "cannot read /no/such/guest.wasm: No such file");
}

fn a_file_that_is_not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "notes.txt", b"this is not wasm\n");
    assert_fails_with(&[&path], "is not a WebAssembly component");
}

fn a_core_module_says_how_to_make_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "module.wasm", &wat::parse_str("(module)").unwrap());
    let output = assert_fails_with(&[&path], "is a core WebAssembly module, not a component");
    assert!(output.contains("wasm32-wasip2") && output.contains("wasm-tools component new"));
}

fn a_truncated_component() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(crate::support::guests::default_guest()).unwrap();
    let path = write(dir.path(), "truncated.wasm", &bytes[..bytes.len() / 2]);
    assert_fails_with(&[&path], "is not a valid component");
}

fn a_component_without_wasi_cli_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.wasm", &wat::parse_str("(component)").unwrap());
    assert_fails_with(&[&path], "does not export `wasi:cli/run@0.2.x`");
}

fn a_component_importing_what_the_host_does_not_provide() {
    let dir = tempfile::tempdir().unwrap();
    // A valid command (its `run` returns ok) that also imports an
    // interface no WASI host has.
    let component = wat::parse_str(
        r#"(component
            (import "example:missing/api" (instance (export "hello" (func))))
            (core module $m (func (export "run") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run-instance (export "run" (func $run)))
            (export "wasi:cli/run@0.2.0" (instance $run-instance)))"#,
    )
    .unwrap();
    let path = write(dir.path(), "needs-more.wasm", &component);
    let output = assert_fails_with(&[&path], "needs an import this host does not provide");
    assert!(output.contains("example:missing/api"), "{output}");
}

fn an_address_already_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_fails_with(
        &["--listen", &addr],
        &format!("cannot listen on {addr}: the address is already in use"),
    );
}

fn a_guest_that_traps_shows_the_wasm_backtrace() {
    let guest = test_guest("trap");
    let output = assert_fails_with(
        &[guest.to_str().unwrap()],
        "the guest trapped: wasm trap: wasm `unreachable`",
    );
    // The guest's own output and panic message come first...
    assert!(output.contains("about to fail on purpose"), "{output}");
    assert!(output.contains("this guest fails on purpose"), "{output}");
    // ...then the guest's frames, by name; none of the host's.
    assert!(output.contains("wasm backtrace:"), "{output}");
    assert!(output.contains("trap::fail_on_purpose"), "{output}");
    assert!(!output.contains("wasmtime::"), "host frames in the output\n{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        a_missing_file,
        a_file_that_is_not_webassembly,
        a_core_module_says_how_to_make_a_component,
        a_truncated_component,
        a_component_without_wasi_cli_run,
        a_component_importing_what_the_host_does_not_provide,
        an_address_already_in_use,
        a_guest_that_traps_shows_the_wasm_backtrace,
    ]
}
