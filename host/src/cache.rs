//! Compiled guests, kept between runs: a component given as a file is
//! compiled to machine code once, and later starts load that code instead
//! of paying for Cranelift again (seconds for a Python or JavaScript guest).
//!
//! An entry is named by the SHA-256 of the component's bytes and by the
//! engine's settings, so a changed file or a different host never picks up
//! stale code. Loading compiled code trusts it, so the directory is created
//! private to the user (0700), and one that others may write to is not used.
//!
//! On Windows the directory is `%LOCALAPPDATA%\wasi-echo`, inside the
//! user's profile, which Windows' default permissions let only the user,
//! SYSTEM and administrators write to; the host checks that it is a real
//! directory, not a link or junction that could lead elsewhere. (It does
//! not read the directory's access list: a `--cache-dir` outside the
//! profile is the operator's to keep private.)

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use wasmtime::component::Component;
use wasmtime::Engine;

/// How many compiled guests the cache keeps (the most recently used).
const KEEP: usize = 16;

/// Where compiled guests go unless `--cache-dir` says otherwise:
/// `$XDG_CACHE_HOME/wasi-echo` or `~/.cache/wasi-echo`; on macOS
/// `~/Library/Caches/wasi-echo`; on Windows `%LOCALAPPDATA%\wasi-echo`.
pub fn default_dir() -> Option<PathBuf> {
    let set = |var: &str| std::env::var_os(var).filter(|dir| !dir.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        set("LOCALAPPDATA")?
    } else if cfg!(target_os = "macos") {
        set("HOME")?.join("Library/Caches")
    } else {
        set("XDG_CACHE_HOME").or_else(|| Some(set("HOME")?.join(".cache")))?
    };
    Some(base.join("wasi-echo"))
}

/// Compiles `bytes`, or loads the code compiled from the same bytes by an
/// earlier run. Without a cache directory it just compiles. A cache that
/// cannot be read or written costs a warning and a compilation, never the run.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    shown: &str,
    dir: Option<&Path>,
) -> Result<Component> {
    let dir = dir.filter(|dir| match private(dir) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("not caching compiled guests in {}: {why}", dir.display());
            false
        }
    });
    let Some(dir) = dir else {
        let (component, seconds) = compile_timed(engine, bytes, shown)?;
        tracing::info!("compiled {shown} in {seconds:.1}s (not cached)");
        return Ok(component);
    };
    let entry = dir.join(entry_name(engine, bytes));
    if entry.exists() {
        // SAFETY: entries are written only by `store` below, from
        // `Component::serialize` in this host, into a directory private to
        // this user. wasmtime still checks the format, version and engine
        // settings, and refuses (it does not misbehave) on a mismatch.
        match unsafe { load_entry(engine, &entry) } {
            Ok(component) => {
                // Mark it recently used, so that pruning keeps it.
                let now = SystemTime::now();
                let _ = File::options().append(true).open(&entry).and_then(|f| f.set_modified(now));
                tracing::info!("loaded {shown} compiled earlier (cache: {})", dir.display());
                return Ok(component);
            }
            Err(e) => tracing::warn!(
                "ignoring the compiled copy of {shown} in {}: {e:#}; compiling it again",
                entry.display()
            ),
        }
    }
    let (component, seconds) = compile_timed(engine, bytes, shown)?;
    match store(dir, &entry, &component) {
        Ok(()) => {
            prune(dir);
            tracing::info!(
                "compiled {shown} in {seconds:.1}s; cached in {} for the next start",
                dir.display()
            )
        }
        Err(e) => {
            tracing::warn!("compiled {shown} in {seconds:.1}s, but could not cache it: {e:#}")
        }
    }
    Ok(component)
}

fn compile_timed(engine: &Engine, bytes: &[u8], shown: &str) -> Result<(Component, f64)> {
    tracing::info!("compiling {shown} to machine code (seconds for a large guest)");
    let started = Instant::now();
    let component = Component::from_binary(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{shown} is not a valid component"))?;
    Ok((component, started.elapsed().as_secs_f64()))
}

/// Loads an entry: mapped from the file on Unix (processes running the
/// same guest share its pages); read into memory on Windows, where Wine
/// cannot change the protection of a file's mapped view (a copy costs a
/// few milliseconds and works on every Windows).
///
/// # Safety
/// As `Component::deserialize_file`: the entry must be code this host wrote.
unsafe fn load_entry(engine: &Engine, entry: &Path) -> wasmtime::Result<Component> {
    #[cfg(unix)]
    return unsafe { Component::deserialize_file(engine, entry) };
    #[cfg(windows)]
    return unsafe { Component::deserialize(engine, std::fs::read(entry)?) };
}

/// Deletes all but the [`KEEP`] most recently used entries, so that the
/// cache does not grow with every guest ever run. Best effort.
fn prune(dir: &Path) {
    let Ok(listing) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<(SystemTime, PathBuf)> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .collect();
    entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in entries.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(path);
    }
}

/// Compiled code is trusted when loaded, so the cache must be a directory
/// only this user can write to (or one that does not exist yet: `store`
/// creates it so).
#[cfg(unix)]
fn private(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return Ok(()) };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        Err("it is not a directory".into())
    } else if meta.uid() != me {
        Err(format!("it belongs to user {}, not to this one ({me})", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Err(format!("others may write to it (mode {:o}); chmod go-w it", meta.mode() & 0o777))
    } else {
        Ok(())
    }
}

/// On Windows: a real directory, not a link or junction (see the module's
/// documentation for what that relies on).
#[cfg(windows)]
fn private(dir: &Path) -> Result<(), String> {
    use std::os::windows::fs::MetadataExt;
    const REPARSE_POINT: u32 = 0x400;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return Ok(()) };
    if meta.file_attributes() & REPARSE_POINT != 0 {
        Err("it is a link or junction, not a directory of its own".into())
    } else if !meta.is_dir() {
        Err("it is not a directory".into())
    } else {
        Ok(())
    }
}

/// Creates the cache directory, private to the user where the system
/// says so with a mode.
fn create_private(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `<sha-256 of the component>-<hash of the engine's settings>.cwasm`.
fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    let content: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    let mut settings = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    format!("{content}-{:016x}.cwasm", settings.finish())
}

/// Writes the entry whole or not at all: a temporary file, then a rename,
/// so a concurrent or interrupted start never sees half an entry.
fn store(dir: &Path, entry: &Path, component: &Component) -> Result<()> {
    create_private(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let code = component
        .serialize()
        .map_err(anyhow::Error::from)
        .context("serializing the compiled component")?;
    let temp = entry.with_extension(format!("{}.part", std::process::id()));
    std::fs::write(&temp, code).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, entry).with_context(|| {
        let _ = std::fs::remove_file(&temp);
        format!("cannot write {}", entry.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn engine() -> Engine {
        Engine::new(&crate::engine::config()).unwrap()
    }

    fn guest_bytes() -> Vec<u8> {
        std::fs::read(env!("DEFAULT_GUEST_WASM")).unwrap()
    }

    /// What a component imports, to tell one component from another.
    fn imports(engine: &Engine, component: &Component) -> Vec<String> {
        let ty = component.component_type();
        ty.imports(engine).map(|(name, _)| name.to_string()).collect()
    }

    /// Another guest's compiled code (a component with other imports).
    fn other_guests_code(engine: &Engine) -> (Vec<u8>, Vec<String>) {
        let other = wat::parse_str("(component)").unwrap();
        let component = Component::from_binary(engine, &other).unwrap();
        (component.serialize().unwrap(), imports(engine, &component))
    }

    #[test]
    fn a_second_compile_loads_the_first_ones_code() {
        let (engine, bytes) = (engine(), guest_bytes());
        let dir = tempfile::tempdir().unwrap();
        let first = compile(&engine, &bytes, "guest.wasm", Some(dir.path())).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary files left");
        let entry = entries[0].as_ref().unwrap().path();

        // The entry is what the second compile loads, not compiles again:
        // put another guest's code there, and that is what comes back.
        let (planted, planted_imports) = other_guests_code(&engine);
        assert_ne!(imports(&engine, &first), planted_imports);
        std::fs::write(&entry, &planted).unwrap();
        let second = compile(&engine, &bytes, "guest.wasm", Some(dir.path())).unwrap();
        assert_eq!(imports(&engine, &second), planted_imports, "the entry was not loaded");

        // Replacing it with garbage makes the load fail, which is noticed
        // and repaired.
        std::fs::write(&entry, b"not compiled code").unwrap();
        compile(&engine, &bytes, "guest.wasm", Some(dir.path())).unwrap();
        let repaired = std::fs::read(&entry).unwrap();
        assert!(repaired.len() > 1000, "the damaged entry was rewritten");
        // SAFETY: written by `store` just above.
        unsafe { Component::deserialize_file(&engine, &entry) }.unwrap();
    }

    #[test]
    fn entries_differ_by_content_and_engine_settings() {
        let (engine, bytes) = (engine(), guest_bytes());
        let mut changed = bytes.clone();
        changed.push(0);
        assert_eq!(entry_name(&engine, &bytes), entry_name(&engine, &bytes));
        assert_ne!(entry_name(&engine, &bytes), entry_name(&engine, &changed));
        let mut other = crate::engine::config();
        other.epoch_interruption(false);
        let other = Engine::new(&other).unwrap();
        assert_ne!(entry_name(&engine, &bytes), entry_name(&other, &bytes));
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for i in 0..KEEP + 3 {
            let path = dir.path().join(format!("{i}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let file = File::options().append(true).open(&path).unwrap();
            file.set_modified(hour_ago + Duration::from_secs(i as u64)).unwrap();
        }
        std::fs::write(dir.path().join("not-an-entry.txt"), b"x").unwrap();
        compile(&engine(), &guest_bytes(), "guest.wasm", Some(dir.path())).unwrap();
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // The new entry and the KEEP - 1 newest old ones, and the other file.
        assert_eq!(left.len(), KEEP + 1, "{left:?}");
        for gone in 0..4 {
            assert!(!left.contains(&format!("{gone}.cwasm")), "{gone}.cwasm was kept: {left:?}");
        }
        assert!(left.contains(&"4.cwasm".into()) && left.contains(&"not-an-entry.txt".into()));
    }

    /// Compiled code is trusted when loaded: code planted in a cache
    /// directory others may write to is never loaded, and nothing is
    /// cached there.
    #[test]
    #[cfg(unix)]
    fn a_cache_others_may_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let (engine, bytes) = (engine(), guest_bytes());
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (planted, planted_imports) = other_guests_code(&engine);
        let entry = dir.path().join(entry_name(&engine, &bytes));
        std::fs::write(&entry, &planted).unwrap();
        let component = compile(&engine, &bytes, "guest.wasm", Some(dir.path())).unwrap();
        assert_ne!(imports(&engine, &component), planted_imports, "the planted code was loaded");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was cached");
        assert!(private(dir.path()).unwrap_err().contains("others may write"));
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let file = tempfile::NamedTempFile::new().unwrap();
        // A directory that cannot exist: its parent is a file.
        let dir = file.path().join("cache");
        compile(&engine(), &guest_bytes(), "guest.wasm", Some(&dir)).unwrap();
    }
}
