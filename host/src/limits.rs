//! The guest's memory limit (`--max-memory`). The socket cap is the
//! sockets layer's (`sockets/cap.rs`); the CPU budget is `run.rs`'s.

use crate::settings::Size;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_is_refused_past_the_limit() {
        let mut limit = MemoryLimit::new(Size(1 << 20));
        assert!(limit.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limit.reached);
        assert!(!limit.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(limit.reached);
    }
}
