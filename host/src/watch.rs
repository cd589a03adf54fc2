//! `--watch`: swaps the guest when its file is replaced, on every
//! platform (SIGHUP does the same on Unix only).
//!
//! The file is looked at four times a second (its size, times and, on
//! Unix, its inode): one file needs no notification service, and looking
//! works the same for a rename over the file, a copy into it, an editor's
//! save, a network drive and Wine. A change counts once it has stopped:
//! the file looked the same two looks in a row. Then it is read, and only a
//! whole, valid component is handed on, so a file caught half written
//! (a copy under way, a build still linking) is never loaded: the watch
//! says so once and waits for the rest; a file that cannot be read yet
//! (on Windows, still open by a writer that shares nothing) is tried
//! again at the next look. A file whose bytes are those of the guest last
//! handed on (or loaded at start) is no change.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::{interval, Interval, MissedTickBehavior};

/// How often the file is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(250);

pub struct Watch {
    path: PathBuf,
    looks: Interval,
    /// What the last look saw.
    seen: Option<Stamp>,
    /// The file as it was when last read (so it is read once per change).
    read: Option<Stamp>,
    /// The bytes last handed on (or loaded at start).
    current: [u8; 32],
}

/// What a look sees of the file, without reading it.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    created: Option<SystemTime>,
    /// Device and inode: a file renamed over another is a new inode even
    /// with the same size and times.
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            created: meta.created().ok(),
            #[cfg(unix)]
            inode,
        })
    }
}

impl Watch {
    /// Watches `path`, the guest file the host runs.
    pub fn start(path: &Path) -> Result<Watch> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("--watch: cannot read {}", path.display()))?;
        let stamp = Stamp::of(path);
        let mut looks = interval(LOOK_EVERY);
        looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(event = "swap", "watching {}: replacing it swaps the guest", path.display());
        Ok(Watch {
            path: path.to_path_buf(),
            looks,
            seen: stamp.clone(),
            read: stamp,
            current: Sha256::digest(&bytes).into(),
        })
    }

    /// Waits for the file to be replaced by another whole component, and
    /// returns its bytes.
    pub async fn changed(&mut self) -> Arc<Vec<u8>> {
        loop {
            self.looks.tick().await;
            let Some(stamp) = self.settled_change() else { continue };
            // Reading and validating megabytes takes a while: off the
            // thread that serves the clients, as loading a guest is.
            let (path, current) = (self.path.clone(), self.current);
            let read = crate::off_thread::run("guest-watcher", move || Read::of(&path, &current));
            let read = read.await;
            let read = read.unwrap_or(Read::Unreadable);
            if let Read::Unreadable = read {
                // (Open by a writer that shares nothing, say): next look.
                continue;
            }
            self.read = Some(stamp);
            match read {
                Read::Whole(bytes, hash) => {
                    self.current = hash;
                    return Arc::new(bytes);
                }
                Read::Torn(why) => tracing::info!(
                    event = "swap",
                    "{} changed, but is not a whole component yet ({why}); waiting for the rest",
                    self.path.display()
                ),
                Read::Same | Read::Unreadable => {}
            }
        }
    }

    /// One look: the file's stamp, if it has changed since it was last
    /// read and then stopped changing.
    fn settled_change(&mut self) -> Option<Stamp> {
        // Gone (a rename under way, say): wait for it to come back.
        let now = Stamp::of(&self.path)?;
        let steady = self.seen.as_ref() == Some(&now);
        self.seen = Some(now.clone());
        (steady && self.read.as_ref() != Some(&now)).then_some(now)
    }
}

/// What reading a changed file found.
enum Read {
    Unreadable,
    /// The bytes of the guest last handed on.
    Same,
    /// Not a whole component: why.
    Torn(String),
    Whole(Vec<u8>, [u8; 32]),
}

impl Read {
    fn of(path: &Path, current: &[u8; 32]) -> Read {
        let Ok(bytes) = std::fs::read(path) else { return Read::Unreadable };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if hash == *current {
            return Read::Same;
        }
        match whole_component(&bytes) {
            Ok(()) => Read::Whole(bytes, hash),
            Err(why) => Read::Torn(why),
        }
    }
}

/// Whether `bytes` are a whole command: a valid component that exports
/// `wasi:cli/run`. A file cut short ends inside a section (invalid), or
/// between two, before the export section that wit-component writes last
/// but for custom sections (no `wasi:cli/run`).
fn whole_component(bytes: &[u8]) -> Result<(), String> {
    let size = bytes.len();
    if !wasmparser::Parser::is_component(bytes) {
        return Err(format!("{size} bytes, no component header"));
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator.validate_all(bytes).map_err(|e| format!("{size} bytes: {e}"))?;
    let (_, exports) = crate::inspect::top_level_names(bytes).map_err(|e| format!("{e}"))?;
    if !exports.iter().any(|name| crate::inspect::is_run(name)) {
        return Err(format!("{size} bytes, no wasi:cli/run export yet"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest command: `wasi:cli/run`'s `run`, returning ok. (No
    /// `$names`: they would add a custom section after the exports, and a
    /// cut before it leaves a component that runs the same.)
    fn component() -> Vec<u8> {
        wat::parse_str(
            r#"(component
                (core module (func (export "run") (result i32) i32.const 0))
                (core instance (instantiate 0))
                (func (result (result)) (canon lift (core func 0 "run")))
                (instance (export "run" (func 0)))
                (export "wasi:cli/run@0.2.0" (instance 0)))"#,
        )
        .unwrap()
    }

    #[test]
    fn a_whole_component_passes() {
        assert_eq!(whole_component(&component()), Ok(()));
    }

    #[test]
    fn a_component_that_is_not_a_command_is_refused() {
        let bytes = wat::parse_str("(component (core module))").unwrap();
        assert!(whole_component(&bytes).unwrap_err().contains("no wasi:cli/run"));
    }

    /// Cut anywhere, at a section's edge too (a valid, smaller component).
    #[test]
    fn every_cut_of_a_component_is_refused() {
        let bytes = component();
        for len in 0..bytes.len() {
            assert!(whole_component(&bytes[..len]).is_err(), "{len} of {} bytes", bytes.len());
        }
    }
}
