//! The socket cap (`--max-connections`): how many sockets the guest holds
//! at once, listeners, clients and UDP sockets alike.
//!
//! A TCP socket holds a [`Place`] for as long as it lives, so giving the
//! place back cannot be forgotten. UDP sockets are wasmtime-wasi's; the
//! sandbox counts those with [`SocketCap::try_open`] and [`SocketCap::close`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct SocketCap {
    open: AtomicUsize,
    max: usize,
}

impl SocketCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SocketCap { open: AtomicUsize::new(0), max })
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

    /// Gives one place back.
    pub fn close(&self) {
        // Saturating: a socket created before counting began is never counted.
        let _ = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A place that is given back when dropped.
    pub fn take(self: &Arc<Self>, what: &dyn std::fmt::Display) -> Option<Place> {
        self.try_open(what).then(|| Place(Arc::clone(self)))
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One socket's place under the cap.
pub struct Place(Arc<SocketCap>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_refused_at_the_cap_and_counted_back_on_close() {
        let cap = SocketCap::new(2);
        assert!(cap.try_open(&"a"));
        let place = cap.take(&"b").unwrap();
        assert!(!cap.try_open(&"c"));
        assert!(cap.take(&"d").is_none());
        drop(place);
        assert!(cap.try_open(&"e"));
        assert_eq!(cap.open(), 2);
        cap.close();
        cap.close();
        cap.close();
        assert_eq!(cap.open(), 0, "never below zero");
    }
}
