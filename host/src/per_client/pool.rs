//! Where the instances come from: wasmtime's pooling allocator. Address
//! space is reserved once, at start-up, and a slot is reused from one
//! client's instance to the next: starting an instance maps the guest's
//! memory image copy-on-write, and ending one gives its pages back.

use crate::engine;
use crate::limits;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How much of each memory, table and stack stays mapped between clients.
const KEEP_RESIDENT: usize = 1 << 20;

/// The most linear memories the pool reserves address space for: each
/// takes about 4 GiB of it (the memory's reservation and guard), so 8 192
/// take 32 TiB of the 128 TiB a 64-bit Linux process has.
pub const MOST_MEMORIES: u32 = 8192;

/// The host's engine configuration (`engine.rs`), with a pool sized for
/// `instances` alive at once. Each gets what `limits.rs` allows one guest,
/// except memories: two each on average (every guest measured has one), at
/// most [`MOST_MEMORIES`]. An instance that finds the pool empty fails to
/// start, and its client is turned away (the log says why).
pub fn config(instances: usize, max_memory: u64) -> Config {
    let n = u32::try_from(instances).unwrap_or(u32::MAX).max(1);
    let each = |count: usize| u32::try_from(count).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .max_core_instances_per_component(each(limits::MAX_INSTANCES))
        .total_core_instances(n.saturating_mul(each(limits::MAX_INSTANCES)))
        .max_memories_per_component(each(limits::MAX_MEMORIES))
        .max_memories_per_module(each(limits::MAX_MEMORIES))
        .total_memories(n.saturating_mul(2).min(MOST_MEMORIES))
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        .max_tables_per_component(each(limits::MAX_TABLES))
        .max_tables_per_module(each(limits::MAX_TABLES))
        .total_tables(n.saturating_mul(4))
        .table_elements(1 << 17)
        .total_stacks(n)
        // A slot's pages stay mapped from one client to the next, and only
        // those an instance touched are reset (Linux's PAGEMAP_SCAN, where
        // the kernel has it): no page faults to map them in again, which
        // cost more than the instance itself.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    let mut config = engine::config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}
