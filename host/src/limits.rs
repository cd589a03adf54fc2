//! Limits that keep a guest from exhausting the machine: its memory, the
//! sockets it holds, and (optionally) its CPU time.

use crate::settings::Size;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::ResourceLimiter;

/// Guards the guest's linear memory (and tables). wasmtime asks before
/// every growth; refusing makes the guest's `memory.grow` fail, which a
/// Rust guest turns into an allocation failure and a trap.
pub struct MemoryLimit {
    max: Size,
    /// Set once a growth was refused, so that a later trap can say why.
    pub reached: bool,
}

/// Most table entries a guest may have (function references); a generous
/// cap that only a guest growing tables without end meets.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimit {
    pub fn new(max: Size) -> Self {
        MemoryLimit { max, reached: false }
    }

    pub fn max(&self) -> Size {
        self.max
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 <= self.max.0 {
            return Ok(true);
        }
        if !self.reached {
            tracing::warn!(
                event = "limit",
                "refused: the guest asked to grow its memory from {} to {} bytes; its limit is {} (--max-memory)",
                current,
                desired,
                self.max
            );
        }
        self.reached = true;
        Ok(false)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Sockets the guest holds right now, against `--max-connections`. A
/// socket counts from its creation (or acceptance) until the guest drops it.
pub struct SocketCount {
    open: AtomicUsize,
    max: usize,
}

impl SocketCount {
    pub fn new(max: usize) -> Self {
        SocketCount { open: AtomicUsize::new(0), max }
    }

    /// Takes one place, or logs why there is none. `what` completes
    /// "refused: ..." (a new UDP socket, a client from 1.2.3.4:5).
    pub fn try_open(&self, what: &dyn std::fmt::Display) -> bool {
        let taken = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < self.max).then_some(n + 1)
        });
        if taken.is_err() {
            tracing::warn!(
                event = "limit",
                "refused: {what}: the guest already holds {} sockets (--max-connections {})",
                self.max,
                self.max
            );
        }
        taken.is_ok()
    }

    pub fn close(&self) {
        // Saturating: a socket created before counting began is never counted.
        let _ = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_refused_at_the_cap_and_counted_back_on_close() {
        let count = SocketCount::new(2);
        assert!(count.try_open(&"a"));
        assert!(count.try_open(&"b"));
        assert!(!count.try_open(&"c"));
        count.close();
        assert!(count.try_open(&"d"));
        assert_eq!(count.open(), 2);
    }

    #[test]
    fn memory_growth_is_refused_past_the_limit() {
        let mut limit = MemoryLimit::new(Size(1 << 20));
        assert!(limit.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limit.reached);
        assert!(!limit.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(limit.reached);
    }
}
