//! The guest components the tests run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The echo guests that must behave the same to their clients.
#[derive(Debug, Clone, Copy)]
pub enum EchoGuest {
    /// The default, embedded in the host (`guest/`).
    BuiltIn,
    /// The lesson's step 1, one client at a time (`guests/lesson/step1/`).
    Iterative,
}

impl EchoGuest {
    /// The component file to pass to the host, if any.
    pub fn file(self) -> Option<PathBuf> {
        match self {
            EchoGuest::BuiltIn => None,
            EchoGuest::Iterative => Some(test_guest("guest_iterative")),
        }
    }
}

/// The default echo guest as a file, the way users run their own guests
/// (`host guest.wasm`). `build.rs` built it.
pub fn default_guest() -> PathBuf {
    PathBuf::from(env!("DEFAULT_GUEST_WASM"))
}

/// A guest from `tests/guests/src/bin/<name>.rs`, the lesson's step 1
/// (`guest_iterative`) or the Rust std guest (`echo-std`), built on first use.
pub fn test_guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(build_test_guests);
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "no test guest {}", path.display());
    path
}

/// Builds the test guests, the lesson's `guest-iterative` and `echo-client`,
/// and `guest-rust-std` for
/// wasm32-wasip2, into the target directory `build.rs` uses for the default
/// guest.
fn build_test_guests() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--locked", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .args([
            "--package",
            "test-guests",
            "--package",
            "guest-iterative",
            "--package",
            "echo-client",
            "--package",
            "lesson-exercises",
            "--package",
            "guest-rust-std",
            "--package",
            "guest-per-client",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build the test guests");
    assert!(status.success(), "building the test guests failed");
    target_dir.join("wasm32-wasip2").join("release")
}

/// Puts `guest` at `at` the way a deployment does: a new file, renamed
/// into place, so that the host never reads a half-written one.
pub fn install(guest: &std::path::Path, at: &std::path::Path) {
    let next = at.with_extension("next");
    std::fs::copy(guest, &next).unwrap();
    std::fs::rename(&next, at).unwrap();
}

/// `guest` installed as a file of its own in a new directory (kept while
/// the returned handle lives), for a host to run and to swap.
pub fn installed(guest: &std::path::Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guest.wasm");
    install(guest, &file);
    (dir, file)
}

/// A tool a test needs that is not part of the Rust toolchain (the wasmtime
/// CLI, componentize-py, podman, ...): from the environment variable `var`,
/// else the Python environment `.ci/run` prepares (`target/toolchains/python`),
/// else PATH. The toolchains tests (`tests/toolchains/`) that need a missing
/// one show as ignored, saying what they need.
#[allow(dead_code)] // used by the toolchains tests only
pub fn find_tool(name: &str, var: &str) -> Option<PathBuf> {
    let from_env = std::env::var_os(var).map(PathBuf::from);
    let toolchains = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/toolchains");
    // What .ci/run prepared: the Python tools' venv, and the tools it
    // unpacked (a newer systemd-analyze).
    let prepared = ["python/bin", "bin"].iter().map(|dir| toolchains.join(dir).join(name));
    let prepared = prepared.into_iter().find(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
    });
    from_env.or(prepared).or(on_path)
}

/// The test's end of a guest's control connection (`swap-window`,
/// `crash-on-bang`): a guest connects to it and waits until the test
/// closes the connection.
pub struct Control {
    listener: std::net::TcpListener,
}

impl Control {
    pub fn new() -> Control {
        Control { listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap() }
    }

    pub fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    /// Waits for the guest to connect (where the guest is then, its own
    /// comment says).
    pub fn accept(&self) -> std::net::TcpStream {
        crate::support::harness::waiting_for(|| "the guest's control connection".to_string());
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        self.listener.set_nonblocking(true).unwrap();
        loop {
            match self.listener.accept() {
                Ok((control, _)) => return control,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "the guest never connected");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("accepting the control connection: {e}"),
            }
        }
    }
}

/// Exports `wasi:cli/run` from core instance `$run`'s `run` (instantiated by `instance`).
pub fn run_export(instance: &str) -> String {
    format!(
        r#"  {instance}
  (func $run (result (result)) (canon lift (core func $run "run")))
  (instance $exports (export "run" (func $run)))
  (export "wasi:cli/run@0.2.12" (instance $exports))
)
"#
    )
}

pub fn component_from_wat(wat: &str) -> tempfile::NamedTempFile {
    let bytes = wat::parse_str(wat).unwrap_or_else(|e| panic!("{e}\n{wat}"));
    let file = tempfile::Builder::new().suffix(".wasm").tempfile().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}
