//! Loading a guest: the embedded default, or a component file.
//!
//! Every way a file can be wrong gets its own one-line explanation.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The default echo guest, compiled to machine code by `build.rs` (or,
/// `default_guest_uncompiled`, the component itself).
static DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.cwasm"));

/// A guest compiled and ready to link: its code, and the SHA-256 of the
/// component it was compiled from (which build serves: `guest_info`).
#[derive(Clone)]
pub struct Compiled {
    pub component: Component,
    pub digest: String,
}

/// The guest's name as the logs (and the guest's `argv[0]`) show it.
pub fn name(path: Option<&Path>) -> String {
    match path {
        None => "echo-guest (built in)".to_string(),
        Some(path) => path.display().to_string(),
    }
}

/// Loads (compiles, or takes from the cache) the guest: from `read` if
/// its file was read already (by `--watch`, which checked the bytes
/// whole). Compiling a large guest takes seconds: it runs off the async
/// runtime's thread, so that the host keeps serving, and a stop request is
/// honoured at once, meanwhile.
pub async fn load_in_background(
    engine: &Engine,
    path: Option<&Path>,
    read: Option<Arc<Vec<u8>>>,
    cache: Option<&Path>,
) -> Result<Compiled> {
    let engine = engine.clone();
    let (path, cache) = (path.map(Path::to_path_buf), cache.map(Path::to_path_buf));
    let loading = crate::off_thread::run("guest-loader", move || match (path.as_deref(), read) {
        (Some(path), Some(bytes)) => compile_file(&engine, path, &bytes, cache.as_deref()),
        (path, _) => load(&engine, path, cache.as_deref()),
    });
    loading.await.map_err(|e| anyhow::anyhow!("loading the guest: {e}"))?
}

/// Loads the guest to run. A file is compiled, or its compiled code is
/// taken from `cache` (see `cache.rs`) when an earlier run left it there.
pub fn load(engine: &Engine, path: Option<&Path>, cache: Option<&Path>) -> Result<Compiled> {
    match path {
        None => load_default(engine),
        Some(path) => load_file(engine, path, cache),
    }
}

/// The built-in guest's component's SHA-256 (`build.rs` computes it).
const DEFAULT_GUEST_SHA256: &str = env!("DEFAULT_GUEST_SHA256");

fn load_default(engine: &Engine) -> Result<Compiled> {
    let component = load_default_code(engine)?;
    Ok(Compiled { component, digest: DEFAULT_GUEST_SHA256.to_string() })
}

#[cfg(not(default_guest_uncompiled))]
fn load_default_code(engine: &Engine) -> Result<Component> {
    // SAFETY: these bytes were written by `Engine::precompile_component` in
    // this crate's build script, with the configuration `engine` was made
    // from (`engine::config`). wasmtime still checks that the version and
    // settings match and refuses the bytes if they do not.
    unsafe { Component::deserialize(engine, DEFAULT_GUEST) }
        .map_err(anyhow::Error::from)
        .context("loading the built-in echo guest (try `cargo clean -p host`)")
}

/// A host cross-built for an architecture the build machine's Cranelift
/// does not know embeds the component itself (see `build.rs`).
#[cfg(default_guest_uncompiled)]
fn load_default_code(engine: &Engine) -> Result<Component> {
    Component::from_binary(engine, DEFAULT_GUEST)
        .map_err(anyhow::Error::from)
        .context("compiling the built-in echo guest")
}

fn load_file(engine: &Engine, path: &Path, cache: Option<&Path>) -> Result<Compiled> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    compile_file(engine, path, &bytes, cache)
}

fn compile_file(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cache: Option<&Path>,
) -> Result<Compiled> {
    check_is_component(path, bytes)?;
    let component = crate::cache::compile(engine, bytes, &path.display().to_string(), cache)?;
    Ok(Compiled { component, digest: crate::cache::sha256(bytes) })
}

/// A clear word for the two ways a file is not a component at all.
pub fn check_is_component(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display();
    if wasmparser::Parser::is_core_wasm(bytes) {
        bail!(
            "{shown} is a core WebAssembly module, not a component; build it for \
             `--target wasm32-wasip2`, or wrap a wasip1 module with `wasm-tools component new \
             {shown} --adapt wasi_snapshot_preview1.command.wasm -o component.wasm`"
        );
    }
    if !wasmparser::Parser::is_component(bytes) {
        bail!(
            "{shown} is not a WebAssembly component (it does not start with the `\\0asm` header)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: reproducible noise without a dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Random bytes, truncations and bit flips of a real component, given
    /// to the loader as a file: every one loads or is refused with an
    /// error of one line, none panics.
    #[test]
    fn random_and_damaged_bytes_never_panic_the_loader() {
        let engine = Engine::new(&crate::engine::config()).unwrap();
        let good = std::fs::read(env!("DEFAULT_GUEST_WASM")).unwrap();
        let mut noise = Noise(0x2545_f491_4f6c_dd1d);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 4, 7, 8, 9, 64, 4096] {
            cases.push(noise.bytes(len));
            for header in [&good[..8], b"\0asm\x01\0\0\0".as_slice()] {
                cases.push([header, &noise.bytes(len)].concat());
            }
        }
        for cut in (0..good.len()).step_by(good.len() / 150).chain(0..64) {
            cases.push(good[..cut].to_vec());
        }
        for _ in 0..20 {
            let mut damaged = good.clone();
            for _ in 0..1 + noise.next() % 8 {
                let at = (noise.next() as usize) % damaged.len();
                damaged[at] ^= 1 << (noise.next() % 8);
            }
            cases.push(damaged);
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.wasm");
        let mut refused = 0;
        for (i, case) in cases.iter().enumerate() {
            std::fs::write(&path, case).unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                load_file(&engine, &path, None).map(drop)
            }));
            let Ok(loaded) = outcome else {
                panic!("case {i} ({} bytes) panicked the loader", case.len())
            };
            if let Err(e) = loaded {
                let message = format!("{e:#}");
                assert!(!message.contains('\n'), "case {i}: not one line: {message}");
                refused += 1;
            }
        }
        assert!(refused > cases.len() / 2, "only {refused} of {} cases were refused", cases.len());
    }
}
