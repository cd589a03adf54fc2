//! What a guest instance may allocate, as totals over everything it
//! creates: `--max-memory` bounds the sum of all its linear memories (a
//! component may have several, in several core instances), table entries
//! are bounded the same way, and the number of core instances, memories
//! and tables is small and fixed. Every growth is also charged to one
//! process-wide total, the ledger's guest memory (`ledger.rs`): however
//! many instances are alive (serving, starting, draining), together they
//! never hold more. The socket cap is the sockets layer's
//! (`sockets/cap.rs`); the resource table's capacity is the sandbox's; the
//! CPU budget is `cpu.rs`'s.

pub use crate::ledger::MAX_TABLE_ELEMENTS;
use crate::log_limit::{Kind, LogLines};
use crate::metrics::METRICS;
use crate::settings::Size;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
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
static MEMORY_REFUSED: Kind = Kind::warn(LogLines::MemoryGrowthRefused, "refused memory growths");

/// Every guest instance's linear memory, in all, and the most it may be
/// (the ledger's guest memory; until it is set, no total applies).
static ALL_GUESTS: AtomicU64 = AtomicU64::new(0);
static ALL_GUESTS_MAX: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the process-wide total of the guests' linear memory.
pub fn set_total_memory(bytes: u64) {
    ALL_GUESTS_MAX.store(bytes, SeqCst);
}

/// Every guest instance's linear memory now, in all.
pub fn total_memory() -> u64 {
    ALL_GUESTS.load(SeqCst)
}

/// Charges `added` bytes to the process-wide total, if it fits.
fn charge_total(added: u64) -> bool {
    let max = ALL_GUESTS_MAX.load(SeqCst);
    ALL_GUESTS
        .fetch_update(SeqCst, SeqCst, |all| all.checked_add(added).filter(|a| *a <= max))
        .is_ok()
}

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
        ALL_GUESTS.fetch_sub(self.memory, SeqCst);
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
        if total <= self.max_memory.0 && charge_total(added) {
            self.memory = total;
            METRICS.guest_memory.inc_by(added);
            return Ok(true);
        }
        if !self.reached && MEMORY_REFUSED.admit() {
            match total <= self.max_memory.0 {
                true => tracing::warn!(
                    event = "limit",
                    "refused: the guest asked to grow its memory by {added} bytes; the guest \
                     instances alive already hold {} of the {} bytes all of them may (the \
                     ledger's guest memory)",
                    ALL_GUESTS.load(SeqCst),
                    ALL_GUESTS_MAX.load(SeqCst)
                ),
                false => tracing::warn!(
                    event = "limit",
                    "refused: the guest asked to grow its memory by {added} bytes, to {total} \
                     bytes over all its memories; its limit is {} (--max-memory)",
                    self.max_memory
                ),
            }
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
