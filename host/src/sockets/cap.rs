//! The socket cap (`--max-connections`): how many sockets the host's
//! guests hold at once, listeners, connections and UDP sockets alike. One
//! cap for the whole process, shared by every guest instance (running,
//! draining after a swap, restarting), so that together they never hold
//! more sockets than it allows. (The host's own descriptors are not
//! counted: its kept listeners, one per `--listen` address, and what it
//! needs for files granted with `--dir` and for name lookups, which the
//! guest's handle limit bounds.)
//!
//! Each socket holds a [`Place`] for as long as its descriptor is open,
//! whoever holds it: a connection's place lives in the connection, which
//! its socket, its two streams and a send still under way all share, so
//! dropping the socket handle while keeping the streams frees nothing.
//! A place is given back when it is dropped, so it cannot be given back
//! twice or forgotten.

use crate::log_limit::Kind;
use crate::metrics::{self, TurnedAway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct SocketCap {
    open: AtomicUsize,
    max: usize,
}

/// Who asks for a place: the refusal's log line names it.
#[derive(Clone, Copy)]
pub enum Asker {
    TcpSocket,
    UdpSocket,
    Client(SocketAddr),
}

static REFUSED_SOCKETS: Kind = Kind::warn("refused new sockets");
static REFUSED_CLIENTS: Kind = Kind::warn("clients turned away at the cap");

impl SocketCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SocketCap { open: AtomicUsize::new(0), max })
    }

    /// A place, given back when dropped; None (and a log line) at the cap.
    pub fn take(self: &Arc<Self>, asker: Asker) -> Option<Place> {
        let taken = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < self.max).then_some(n + 1)
        });
        match taken {
            Ok(_) => Some(Place(Arc::clone(self))),
            Err(_) => {
                self.refused(asker);
                None
            }
        }
    }

    fn refused(&self, asker: Asker) {
        let max = self.max;
        let (kind, what) = match asker {
            Asker::TcpSocket => (&REFUSED_SOCKETS, "a new TCP socket".to_string()),
            Asker::UdpSocket => (&REFUSED_SOCKETS, "a new UDP socket".to_string()),
            Asker::Client(peer) => {
                metrics::turned_away(TurnedAway::Cap);
                (&REFUSED_CLIENTS, format!("a client from {peer}, turned away"))
            }
        };
        if kind.admit() {
            tracing::warn!(
                event = "limit",
                "refused: {what}: the guests already hold {max} sockets (--max-connections {max})"
            );
        }
    }

    /// The places taken now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One socket's place under the cap.
pub struct Place(Arc<SocketCap>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_refused_at_the_cap_and_counted_back_when_dropped() {
        let cap = SocketCap::new(2);
        let first = cap.take(Asker::TcpSocket).unwrap();
        let second = cap.take(Asker::UdpSocket).unwrap();
        assert!(cap.take(Asker::TcpSocket).is_none());
        assert!(cap.take(Asker::Client("127.0.0.1:1".parse().unwrap())).is_none());
        assert_eq!(cap.open(), 2);
        drop(first);
        assert_eq!(cap.open(), 1);
        let third = cap.take(Asker::TcpSocket).unwrap();
        drop((second, third));
        assert_eq!(cap.open(), 0);
    }
}
