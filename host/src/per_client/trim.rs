//! Giving memory back after a burst of clients. The pool keeps what an
//! instance touched resident in its slot (memory, table, stack), so that
//! the next client there starts without page faults: after a burst of a
//! thousand clients, a thousand slots stay resident, tens of megabytes,
//! for good. Decommitting every slot after every client would cost each
//! new client its page faults (measured: 40% fewer clients a second), so
//! instead, once no instance has been alive for [`CHECK_EVERY`] after more
//! than [`RESIDENT_ENOUGH`] were alive at once, the host makes the pool
//! afresh: a new engine, the same guest's code (serialized from the old
//! engine, loaded into the new one), linked the same way. New clients get
//! it; the old engine, its pool and its epoch ticker go once the last
//! instance that started in it has ended; then the C allocator is asked to
//! give its free memory back too.

use super::pool;
use crate::epoch::EpochTicker;
use crate::guest::Compiled;
use crate::settings::Settings;
use crate::supervise::Linked;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::Engine;

/// How often the host looks whether the pool should be made afresh.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Slots that may stay resident without a fresh pool being worth it.
const RESIDENT_ENOUGH: usize = 16;

/// Whether the pool should be made afresh now: none alive, after a burst.
pub fn due(alive: usize, peak: usize) -> bool {
    alive == 0 && peak > RESIDENT_ENOUGH
}

/// A fresh engine and pool for `settings`, with `old`'s guest in it.
pub fn fresh(old: &Linked, settings: &Settings) -> Result<(Engine, EpochTicker, Linked)> {
    let limits = settings.limits;
    let engine = Engine::new(&pool::config(limits.max_connections + 1, limits.max_memory.0))
        .map_err(anyhow::Error::from)
        .context("reserving a fresh pool of guest instances")?;
    let code = old.guest.component.serialize().map_err(anyhow::Error::from)?;
    // SAFETY: these bytes were just written by `Component::serialize` in
    // this process, from an engine with the very configuration this one
    // has (`pool::config` with the same numbers).
    let component = unsafe { Component::deserialize(&engine, &code) }
        .map_err(anyhow::Error::from)
        .context("loading the guest's code into the fresh pool")?;
    let guest = Compiled { component, digest: old.guest.digest.clone() };
    let linked = super::link(&engine, settings, &guest, old.shared.sandbox.caps.clone())?;
    let ticker = EpochTicker::start(&engine)?;
    Ok((engine, ticker, linked))
}

/// Lets the old pool go once no instance runs in it any more: until then
/// its epoch ticker keeps ticking for them.
pub async fn let_go(old: Arc<Linked>, ticker: EpochTicker) {
    while Arc::strong_count(&old) > 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Off the serving threads: the ticker's thread takes up to a tick to
    // end, and unmapping the pool takes a while.
    let gone = tokio::task::spawn_blocking(move || {
        drop(old);
        ticker.stop_and_join();
        give_back_free_memory();
    });
    if gone.await.is_ok() {
        tracing::info!(event = "trim", "per-client: the old pool is gone");
    }
}

/// glibc keeps freed memory for later; ask it to return what it can.
/// (musl's allocator returns it by itself.)
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the heap's top and
    // in its free lists; it touches nothing allocated.
    unsafe {
        libc::malloc_trim(0);
    }
}
