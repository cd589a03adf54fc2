//! What a guest instance may allocate, as totals over everything it
//! creates: `--max-memory` bounds the sum of all its linear memories (a
//! component may have several, in several core instances), table entries
//! are bounded the same way, and the number of core instances, memories
//! and tables is small and fixed. The socket cap is the sockets layer's
//! (`sockets/cap.rs`); the resource table's capacity is the sandbox's; the
//! CPU budget is `instance.rs`'s.

use crate::log_limit::Kind;
use crate::metrics::METRICS;
use crate::settings::Size;
use wasmtime::ResourceLimiter;

/// Core module instances a guest may create. Measured: a Rust guest makes
/// 3, a JavaScript one (componentize-js) 4, a Python one (componentize-py)
/// 14; each costs the host some bookkeeping outside the guest's memory.
pub const MAX_INSTANCES: usize = 32;
/// Linear memories a guest may create (each of those guests has 1). Each
/// reserves address space (not memory) for its guard regions, so the
/// count is kept small.
pub const MAX_MEMORIES: usize = 8;
/// Tables a guest may create (each of those guests has 2).
pub const MAX_TABLES: usize = 32;
/// Table entries (function references), over all of a guest's tables: at
/// most 16 bytes each in the host's memory, so 16 MiB in all.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

static MEMORY_REFUSED: Kind = Kind::warn("refused memory growths");

/// A guest's memory and tables, counted against their totals. wasmtime
/// asks before every memory or table is created or grows; refusing makes
/// the guest's `memory.grow` fail, which a Rust guest turns into an
/// allocation failure and a trap.
///
/// A growth is counted once allowed, and never taken back: one that then
/// fails (the system had no memory for it) stays counted. That errs on the
/// safe side; wasmtime does not always say which growth failed.
pub struct GuestLimits {
    max_memory: Size,
    /// Bytes of linear memory the guest has, over all its memories.
    memory: u64,
    /// Table entries, over all its tables.
    table_elements: usize,
    /// Set once a growth was refused, so that a later trap can say why.
    pub reached: bool,
}

impl GuestLimits {
    pub fn new(max_memory: Size) -> Self {
        GuestLimits { max_memory, memory: 0, table_elements: 0, reached: false }
    }

    pub fn max_memory(&self) -> Size {
        self.max_memory
    }

    /// The guest's linear memory, over all its memories, in bytes.
    #[cfg(test)]
    pub fn memory(&self) -> u64 {
        self.memory
    }
}

impl Drop for GuestLimits {
    /// The instance's memory goes with it (its store): the metric counts
    /// the memory of every instance alive.
    fn drop(&mut self) {
        METRICS.guest_memory.dec_by(self.memory);
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own maximum it fails anyway: nothing to count.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let added = desired.saturating_sub(current) as u64;
        let total = self.memory.saturating_add(added);
        if total <= self.max_memory.0 {
            self.memory = total;
            METRICS.guest_memory.inc_by(added);
            return Ok(true);
        }
        if !self.reached && MEMORY_REFUSED.admit() {
            tracing::warn!(
                event = "limit",
                "refused: the guest asked to grow its memory by {added} bytes, to {total} bytes \
                 over all its memories; its limit is {} (--max-memory)",
                self.max_memory
            );
        }
        self.reached = true;
        Ok(false)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let total = self.table_elements.saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn memory_is_limited_as_a_total_over_every_memory() {
        let mut limits = GuestLimits::new(Size(4 << 20));
        // Two memories created at 1 MiB each, then each grown by 1 MiB.
        assert!(limits.memory_growing(0, MIB, None).unwrap());
        assert!(limits.memory_growing(0, MIB, None).unwrap());
        assert!(limits.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert!(limits.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(limits.memory(), 4 << 20);
        assert!(!limits.reached);
        // Each memory alone is well under the limit; together they are at it.
        assert!(!limits.memory_growing(2 * MIB, 3 * MIB, None).unwrap());
        assert!(limits.reached);
    }

    #[test]
    fn a_growth_past_a_memorys_own_maximum_is_not_counted() {
        let mut limits = GuestLimits::new(Size(4 << 20));
        assert!(!limits.memory_growing(0, 3 * MIB, Some(2 * MIB)).unwrap());
        assert_eq!(limits.memory(), 0);
        assert!(!limits.reached, "not the guest's limit that refused it");
        assert!(limits.memory_growing(0, 4 * MIB, None).unwrap());
    }

    #[test]
    fn table_entries_are_limited_as_a_total_over_every_table() {
        let mut limits = GuestLimits::new(Size(4 << 20));
        assert!(limits.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(limits.table_growing(0, MAX_TABLE_ELEMENTS / 2, None).unwrap());
        assert!(!limits.table_growing(0, 1, None).unwrap());
    }
}
