//! One guest instance, as the host's listeners and its supervisor see it:
//! how many clients it serves, and when it listened or lost a client.
//!
//! While a new instance takes over (SIGHUP), the supervisor waits for the
//! new one to listen where the old one did (`Listeners` knows where), then
//! for the old one's last client to leave (`swap.rs`).

use crate::metrics::METRICS;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Tenant {
    /// Newer instances have larger ids (see `Listeners::lend`).
    pub id: u64,
    clients: AtomicUsize,
    changed: Notify,
}

impl Tenant {
    pub fn new(id: u64) -> Arc<Tenant> {
        Arc::new(Tenant { id, clients: AtomicUsize::new(0), changed: Notify::new() })
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// Returns after the next listen or client leaving (or at once if one
    /// happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// It listened on one of the host's kept listeners.
    pub fn listened(&self) {
        self.changed.notify_one();
    }

    /// A client accepted: it counts until the connection is gone (for
    /// its instance, and in the host's metrics).
    pub fn client(self: &Arc<Self>) -> Client {
        self.clients.fetch_add(1, Ordering::SeqCst);
        METRICS.connections_accepted.inc();
        METRICS.connections_open.inc();
        Client(Arc::clone(self))
    }
}

/// One client of a tenant, counted while it is held.
pub struct Client(Arc<Tenant>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
        METRICS.connections_open.dec();
        self.0.changed.notify_one();
    }
}
