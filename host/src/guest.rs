//! Loading a guest: the embedded default, or a component file.
//!
//! Every way a file can be wrong gets its own one-line explanation.

use anyhow::{bail, Context, Result};
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The default echo guest, compiled to machine code by `build.rs`.
static DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.cwasm"));

/// The guest's name as the logs (and the guest's `argv[0]`) show it.
pub fn name(path: Option<&Path>) -> String {
    match path {
        None => "echo-guest (built in)".to_string(),
        Some(path) => path.display().to_string(),
    }
}

pub fn load(engine: &Engine, path: Option<&Path>) -> Result<Component> {
    match path {
        None => load_default(engine),
        Some(path) => load_file(engine, path),
    }
}

fn load_default(engine: &Engine) -> Result<Component> {
    // SAFETY: these bytes were written by `Engine::precompile_component` in
    // this crate's build script, with the configuration `engine` was made
    // from (`engine::config`). wasmtime still checks that the version and
    // settings match and refuses the bytes if they do not.
    unsafe { Component::deserialize(engine, DEFAULT_GUEST) }
        .map_err(anyhow::Error::from)
        .context("loading the built-in echo guest (try `cargo clean -p host`)")
}

fn load_file(engine: &Engine, path: &Path) -> Result<Component> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    if wasmparser::Parser::is_core_wasm(&bytes) {
        bail!(
            "{shown} is a core WebAssembly module, not a component; build it for \
             `--target wasm32-wasip2`, or wrap a wasip1 module with `wasm-tools component new \
             {shown} --adapt wasi_snapshot_preview1.command.wasm -o component.wasm`"
        );
    }
    if !wasmparser::Parser::is_component(&bytes) {
        bail!(
            "{shown} is not a WebAssembly component (it does not start with the `\\0asm` header)"
        );
    }
    Component::from_binary(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{shown} is not a valid component"))
}
