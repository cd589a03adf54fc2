//! Compiled guests, kept between runs: a component given as a file is
//! compiled to machine code once, and later starts load that code instead
//! of paying for Cranelift again (seconds for a Python or JavaScript guest).
//!
//! An entry is named by the SHA-256 of the component's bytes and by the
//! engine's settings, so a changed file or a different host never picks up
//! stale code. Loading compiled code trusts it, so on Unix nothing another
//! user could have written is loaded:
//!
//! - the directory is opened once, without following a link, and checked
//!   on the opened handle: a directory, this user's, nobody else may write
//!   it (created 0700 when missing); every entry is then reached through
//!   that handle (`openat`), so the path cannot be swapped between the
//!   check and the use;
//! - an entry is opened without following a link and checked on the
//!   opened handle the same way: a regular file, this user's, nobody else
//!   may write it; its code is read from that handle. An entry that fails
//!   the check (planted while the directory was open to others, say) is
//!   removed, with one line, and the guest compiled again.
//!
//! On Windows the directory is `%LOCALAPPDATA%\wasi-tcp-host`, inside the
//! user's profile, which Windows' default permissions let only the user,
//! SYSTEM and administrators write to; the host checks that it, and each
//! entry, is a real directory or file, not a link or junction that could
//! lead elsewhere. (It does not read access lists: a `--cache-dir` outside
//! the profile is the operator's to keep private.)

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use wasmtime::component::Component;
use wasmtime::Engine;

pub use platform::CacheDir;

/// How many compiled guests the cache keeps (the most recently used).
const KEEP: usize = 16;

/// Where compiled guests go unless `--cache-dir` says otherwise:
/// `$XDG_CACHE_HOME/wasi-tcp-host` or `~/.cache/wasi-tcp-host`; on macOS
/// `~/Library/Caches/wasi-tcp-host`; on Windows `%LOCALAPPDATA%\wasi-tcp-host`.
pub fn default_dir() -> Option<PathBuf> {
    let set = |var: &str| std::env::var_os(var).filter(|dir| !dir.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        set("LOCALAPPDATA")?
    } else if cfg!(target_os = "macos") {
        set("HOME")?.join("Library/Caches")
    } else {
        set("XDG_CACHE_HOME").or_else(|| Some(set("HOME")?.join(".cache")))?
    };
    Some(base.join("wasi-tcp-host"))
}

/// What an entry held.
pub enum Entry {
    Missing,
    /// Not to be trusted: why. (It has been removed.)
    Untrusted(String),
    Code(Vec<u8>),
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
    let cache = dir.and_then(|dir| match CacheDir::open(dir) {
        Ok(cache) => Some(cache),
        Err(why) => {
            tracing::warn!("not caching compiled guests in {}: {why}", dir.display());
            None
        }
    });
    let Some(cache) = cache else {
        let (component, seconds) = compile_timed(engine, bytes, shown)?;
        tracing::info!("compiled {shown} in {seconds:.1}s (not cached)");
        return Ok(component);
    };
    let name = entry_name(engine, bytes);
    match cache.read(&name) {
        Entry::Missing => {}
        Entry::Untrusted(why) => tracing::warn!(
            "removed the compiled copy of {shown} in {}: {why}; only code this host wrote \
             is loaded; compiling it again",
            cache.path().display()
        ),
        // SAFETY: the entry is a file only this user can write, in a
        // directory only this user can write, reached through handles
        // checked for that (see the module's documentation): code that
        // `store` below wrote from `Component::serialize` in this host.
        // wasmtime still checks the format, version and engine settings,
        // and refuses (it does not misbehave) on a mismatch.
        Entry::Code(code) => match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => {
                tracing::info!(
                    "loaded {shown} compiled earlier (cache: {})",
                    cache.path().display()
                );
                return Ok(component);
            }
            Err(e) => tracing::warn!(
                "ignoring the compiled copy of {shown} in {}: {e:#}; compiling it again",
                cache.path().display()
            ),
        },
    }
    let (component, seconds) = compile_timed(engine, bytes, shown)?;
    let stored = component
        .serialize()
        .map_err(anyhow::Error::from)
        .context("serializing the compiled component")
        .and_then(|code| cache.store(&name, &code));
    match stored {
        Ok(()) => {
            cache.prune(KEEP);
            tracing::info!(
                "compiled {shown} in {seconds:.1}s; cached in {} for the next start",
                cache.path().display()
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

/// `bytes`' SHA-256, in hexadecimal.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `<sha-256 of the component>-<hash of the engine's settings>.cwasm`.
fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    let content = sha256(bytes);
    let mut settings = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    format!("{content}-{:016x}.cwasm", settings.finish())
}

/// The entries (`*.cwasm`) to delete so that only the `keep` most recently
/// used stay, from (last used, name) pairs.
fn to_prune(mut entries: Vec<(SystemTime, String)>, keep: usize) -> Vec<String> {
    entries.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
    entries.into_iter().skip(keep).map(|(_, name)| name).collect()
}

#[cfg(unix)]
mod platform {
    use super::*;
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    /// The cache directory, opened and checked (see the module's
    /// documentation); every entry is reached through this handle.
    pub struct CacheDir {
        path: PathBuf,
        fd: OwnedFd,
    }

    /// Why a file or directory, by its opened handle, is not to be trusted.
    fn untrusted(fd: &OwnedFd, directory: bool) -> std::io::Result<Option<String>> {
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a `stat` for an open descriptor, or fails.
        if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let kind = stat.st_mode & libc::S_IFMT;
        let why = if directory && kind != libc::S_IFDIR {
            Some("it is not a directory".to_string())
        } else if !directory && kind != libc::S_IFREG {
            Some("it is not a regular file".to_string())
        } else if stat.st_uid != me {
            Some(format!("it belongs to user {}, not to this one ({me})", stat.st_uid))
        } else if stat.st_mode & 0o022 != 0 {
            let mode = stat.st_mode & 0o777;
            let fix = if directory { "; chmod go-w it" } else { "" };
            Some(format!("others may write to it (mode {mode:o}){fix}"))
        } else {
            None
        };
        Ok(why)
    }

    fn c_name(name: &str) -> std::io::Result<CString> {
        CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput.into())
    }

    fn opened(fd: libc::c_int) -> std::io::Result<OwnedFd> {
        match fd {
            -1 => Err(std::io::Error::last_os_error()),
            // SAFETY: a descriptor just opened, owned by no one else.
            fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    impl CacheDir {
        /// Opens the directory (creating it, private, if missing) and
        /// checks it on the opened handle.
        pub fn open(path: &Path) -> Result<CacheDir, String> {
            let mut builder = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
            if let Err(e) = builder.create(path) {
                return Err(format!("cannot create it: {e}"));
            }
            let c_path = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| "its name holds a NUL byte".to_string())?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: open reads a NUL-terminated path.
            let fd = opened(unsafe { libc::open(c_path.as_ptr(), flags) }).map_err(|e| {
                match std::fs::symlink_metadata(path) {
                    Ok(meta) if meta.is_symlink() => {
                        "it is a symbolic link, not a directory".to_string()
                    }
                    _ => format!("cannot open it: {e}"),
                }
            })?;
            match untrusted(&fd, true) {
                Ok(None) => Ok(CacheDir { path: path.to_path_buf(), fd }),
                Ok(Some(why)) => Err(why),
                Err(e) => Err(format!("cannot look at it: {e}")),
            }
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        fn open_at(&self, name: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
            let name = c_name(name)?;
            let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: openat reads a NUL-terminated name relative to an open directory.
            opened(unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), flags, 0o600) })
        }

        fn remove(&self, name: &str) {
            if let Ok(name) = c_name(name) {
                // SAFETY: unlinkat reads a NUL-terminated name relative to an open directory.
                unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) };
            }
        }

        /// The code in entry `name`, if this host wrote it; an entry that
        /// fails the checks (or is a link) is removed.
        pub fn read(&self, name: &str) -> Entry {
            let fd = match self.open_at(name, libc::O_RDONLY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Entry::Missing,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    self.remove(name);
                    return Entry::Untrusted("it is a symbolic link".to_string());
                }
                Err(e) => return Entry::Untrusted(format!("it cannot be opened ({e})")),
            };
            match untrusted(&fd, false) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    self.remove(name);
                    return Entry::Untrusted(why);
                }
                Err(e) => return Entry::Untrusted(format!("it cannot be looked at ({e})")),
            }
            let mut file = File::from(fd);
            let mut code = Vec::new();
            if let Err(e) = file.read_to_end(&mut code) {
                return Entry::Untrusted(format!("it cannot be read ({e})"));
            }
            // Marks it recently used, so that pruning keeps it.
            let _ = file.set_modified(SystemTime::now());
            Entry::Code(code)
        }

        /// Writes entry `name` whole or not at all: a new file (only this
        /// user may read or write it), then a rename over the name.
        pub fn store(&self, name: &str, code: &[u8]) -> Result<()> {
            let temp = format!("{name}.{}.part", std::process::id());
            self.remove(&temp);
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            let fd = self.open_at(&temp, flags).with_context(|| format!("cannot create {temp}"))?;
            let written = File::from(fd).write_all(code);
            let (c_temp, c_name) = (c_name(&temp)?, c_name(name)?);
            let dir = self.fd.as_raw_fd();
            // SAFETY: renameat reads two NUL-terminated names relative to an open directory.
            let renamed = written.is_ok()
                && unsafe { libc::renameat(dir, c_temp.as_ptr(), dir, c_name.as_ptr()) } == 0;
            if !renamed {
                let error = written.err().unwrap_or_else(std::io::Error::last_os_error);
                self.remove(&temp);
                return Err(error).with_context(|| format!("cannot write {name}"));
            }
            Ok(())
        }

        /// Deletes all but the `keep` most recently used entries, so that
        /// the cache does not grow with every guest ever run. Best effort.
        pub fn prune(&self, keep: usize) {
            let Ok(listing) = std::fs::read_dir(&self.path) else { return };
            let entries = listing
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".cwasm"))
                .filter_map(|name| {
                    let fd = self.open_at(&name, libc::O_RDONLY).ok()?;
                    Some((File::from(fd).metadata().ok()?.modified().ok()?, name))
                })
                .collect();
            for name in to_prune(entries, keep) {
                self.remove(&name);
            }
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use std::os::windows::fs::MetadataExt;

    const REPARSE_POINT: u32 = 0x400;

    /// The cache directory, checked to be a real directory.
    pub struct CacheDir {
        path: PathBuf,
    }

    fn not_real(path: &Path, directory: bool) -> Option<String> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if meta.file_attributes() & REPARSE_POINT != 0 {
            Some("it is a link or junction".into())
        } else if meta.is_dir() != directory {
            Some(format!("it is not a {}", if directory { "directory" } else { "file" }))
        } else {
            None
        }
    }

    impl CacheDir {
        pub fn open(path: &Path) -> Result<CacheDir, String> {
            if let Some(why) = not_real(path, true) {
                return Err(why);
            }
            std::fs::create_dir_all(path).map_err(|e| format!("cannot create it: {e}"))?;
            Ok(CacheDir { path: path.to_path_buf() })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Read into memory: Wine cannot change the protection of a file's
        /// mapped view, and a copy costs a few milliseconds.
        pub fn read(&self, name: &str) -> Entry {
            let entry = self.path.join(name);
            if let Some(why) = not_real(&entry, false) {
                let _ = std::fs::remove_file(&entry);
                return Entry::Untrusted(why);
            }
            match std::fs::read(&entry) {
                Ok(code) => {
                    let file = std::fs::File::options().append(true).open(&entry);
                    let _ = file.and_then(|f| f.set_modified(SystemTime::now()));
                    Entry::Code(code)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry::Missing,
                Err(e) => Entry::Untrusted(format!("it cannot be read ({e})")),
            }
        }

        pub fn store(&self, name: &str, code: &[u8]) -> Result<()> {
            let (entry, temp) = (self.path.join(name), self.path.join(format!("{name}.part")));
            std::fs::write(&temp, code)
                .with_context(|| format!("cannot write {}", temp.display()))?;
            std::fs::rename(&temp, &entry).with_context(|| {
                let _ = std::fs::remove_file(&temp);
                format!("cannot write {}", entry.display())
            })
        }

        pub fn prune(&self, keep: usize) {
            let Ok(listing) = std::fs::read_dir(&self.path) else { return };
            let entries = listing
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    Some((e.metadata().ok()?.modified().ok()?, e.file_name().into_string().ok()?))
                })
                .filter(|(_, name)| name.ends_with(".cwasm"))
                .collect();
            for name in to_prune(entries, keep) {
                let _ = std::fs::remove_file(self.path.join(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
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
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary files left");
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
        let refused = CacheDir::open(dir.path()).err().unwrap();
        assert!(refused.contains("others may write"), "{refused}");
    }

    /// An entry that belongs to another user, or that others may write,
    /// is removed and the guest compiled again, even in a directory that
    /// is private now (the entry was planted while it was not): checked
    /// on the opened file.
    #[test]
    #[cfg(unix)]
    fn an_entry_this_host_did_not_write_is_removed_not_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let (engine, bytes) = (engine(), guest_bytes());
        let (planted, planted_imports) = other_guests_code(&engine);
        let plant = |dir: &Path| {
            let entry = dir.join(entry_name(&engine, &bytes));
            std::fs::write(&entry, &planted).unwrap();
            entry
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let others_may_write = |entry: &Path| {
            std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).unwrap()
        };
        let nobodys = |entry: &Path| std::os::unix::fs::chown(entry, Some(65534), None).unwrap();
        type Planting<'a> = (&'a str, &'a dyn Fn(&Path));
        let plantings: Vec<Planting> = match root {
            true => vec![
                ("others may write to it", &others_may_write),
                ("belongs to user 65534", &nobodys),
            ],
            false => vec![("others may write to it", &others_may_write)],
        };
        for (why, make_untrusted) in plantings {
            let dir = tempfile::tempdir().unwrap();
            let entry = plant(dir.path());
            make_untrusted(&entry);
            let cache = CacheDir::open(dir.path()).unwrap();
            match cache.read(&entry_name(&engine, &bytes)) {
                Entry::Untrusted(said) => assert!(said.contains(why), "{said}"),
                _ => panic!("an entry that {why} was trusted"),
            }
            assert!(!entry.exists(), "an entry that {why} was left in place");
            let component = compile(&engine, &bytes, "guest.wasm", Some(dir.path())).unwrap();
            assert_ne!(imports(&engine, &component), planted_imports, "{why}: planted code ran");
        }
    }

    /// A link is followed neither as the directory nor as an entry.
    #[test]
    #[cfg(unix)]
    fn links_are_not_followed() {
        let (engine, bytes) = (engine(), guest_bytes());
        let real = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(real.path(), &linked).unwrap();
        let refused = CacheDir::open(&linked).err().unwrap();
        assert!(refused.contains("symbolic link"), "{refused}");

        let (planted, _) = other_guests_code(&engine);
        let elsewhere = real.path().join("code");
        std::fs::write(&elsewhere, planted).unwrap();
        let name = entry_name(&engine, &bytes);
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(&name)).unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        assert!(matches!(cache.read(&name), Entry::Untrusted(why) if why.contains("link")));
        assert!(elsewhere.exists(), "the link's target is not the cache's to remove");
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let file = tempfile::NamedTempFile::new().unwrap();
        // A directory that cannot exist: its parent is a file.
        let dir = file.path().join("cache");
        compile(&engine(), &guest_bytes(), "guest.wasm", Some(&dir)).unwrap();
    }
}
