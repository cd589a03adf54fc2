//! Builds the default guest (`guest/`) for `wasm32-wasip2` and precompiles
//! it, so that `host` embeds ready-to-run machine code and starts without
//! running Cranelift.
//!
//! The guest is built by a nested `cargo build` into its own target
//! directory (`target/guests`), so it never waits on the outer build's lock.

#[path = "src/engine.rs"]
mod engine;

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().context("host/ has no parent")?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let guests_dir = target_dir.join("guests");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let wasm = build_guest(workspace, &guests_dir, "guest")?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    // Machine code for the target being built (a musl build on a glibc
    // machine, a Windows build on Linux): wasmtime loads only code made for
    // its own target. Cranelift here knows the build machine's architecture
    // only; for another (an Apple Silicon build on an x86-64 machine, say)
    // the component is embedded as it is, and compiled when the host starts.
    println!("cargo::rustc-check-cfg=cfg(default_guest_uncompiled)");
    match precompile(&bytes) {
        Ok(precompiled) => std::fs::write(out_dir.join("guest.cwasm"), precompiled)?,
        Err(e) if env::var("TARGET")? != env::var("HOST")? => {
            println!("cargo::warning=the default guest is compiled when the host starts: {e:#}");
            println!("cargo::rustc-cfg=default_guest_uncompiled");
            std::fs::write(out_dir.join("guest.cwasm"), &bytes)?;
        }
        Err(e) => return Err(e),
    }
    // Which build of the guest serves (the metrics' `guest_info`).
    let digest: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    println!("cargo:rustc-env=DEFAULT_GUEST_SHA256={digest}");
    // Tests run the same guest from a file, the way users run their own.
    println!("cargo:rustc-env=DEFAULT_GUEST_WASM={}", wasm.display());
    Ok(())
}

/// The component, compiled for the target being built.
fn precompile(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut config = engine::config();
    config.target(&env::var("TARGET")?).map_err(anyhow::Error::from)?;
    let engine = wasmtime::Engine::new(&config).map_err(anyhow::Error::from)?;
    engine
        .precompile_component(bytes)
        .map_err(anyhow::Error::from)
        .context("precompiling the default guest")
}

/// `cargo build --locked --release --target wasm32-wasip2 -p <package>`;
/// returns the component it wrote. `--locked`: the cargo that runs this
/// script has resolved Cargo.lock already, and this build must use it as
/// it is.
fn build_guest(workspace: &Path, target_dir: &Path, package: &str) -> Result<PathBuf> {
    check_target_installed()?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--locked", "--release", "--target", GUEST_TARGET, "--package", package])
        .env("CARGO_TARGET_DIR", target_dir)
        // Flags meant for the host (say, -C target-cpu=native) do not
        // apply to WebAssembly.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .context("running cargo to build the guest")?;
    if !status.success() {
        bail!("building the `{package}` guest for {GUEST_TARGET} failed (see the errors above)");
    }
    let wasm = target_dir.join(GUEST_TARGET).join("release").join(format!("{package}.wasm"));
    rerun_if_sources_change(&wasm)?;
    Ok(wasm)
}

/// A clear message instead of "can't find crate for `core`".
fn check_target_installed() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).args(["--print", "sysroot"]).output()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    if !sysroot.join("lib/rustlib").join(GUEST_TARGET).exists() {
        bail!(
            "the {GUEST_TARGET} target is not installed for this toolchain; \
             run `rustup target add {GUEST_TARGET}`"
        );
    }
    Ok(())
}

/// Reads the `.d` file cargo wrote next to the artifact: every source file
/// the guest was built from, so that this script reruns when one changes.
fn rerun_if_sources_change(artifact: &Path) -> Result<()> {
    let deps = artifact.with_extension("d");
    let text =
        std::fs::read_to_string(&deps).with_context(|| format!("reading {}", deps.display()))?;
    let mut files = BTreeSet::new();
    for line in text.lines() {
        let Some((_, inputs)) = line.split_once(": ") else {
            continue;
        };
        let mut parts = inputs.split_whitespace();
        while let Some(part) = parts.next() {
            let mut file = part.to_string();
            // Spaces in paths are escaped as "\ ".
            while file.ends_with('\\') {
                file.pop();
                file.push(' ');
                file.push_str(parts.next().unwrap_or_default());
            }
            files.insert(file);
        }
    }
    files.insert("../guest/Cargo.toml".into());
    files.insert("../Cargo.lock".into());
    // The workspace's manifest holds the profiles the guest is built with:
    // a change there rebuilds the guest, and the host must embed that one.
    files.insert("../Cargo.toml".into());
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
