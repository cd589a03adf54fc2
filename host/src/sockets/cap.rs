//! The caps on the guests' descriptors, one each for the whole process,
//! shared by every guest instance (running, draining after a swap,
//! restarting, one per client), so that together they never hold more
//! than the ledger allows (`ledger.rs`):
//!
//! - the socket cap (`--max-connections`): listeners, connections and UDP
//!   sockets alike;
//! - the file cap (`--max-files`): files and directories opened under a
//!   `--dir` grant, and each instance's `--dir` directories themselves.
//!
//! (The host's own descriptors are the ledger's other rows: its kept
//! listeners, one per `--listen` address, its metrics connections, and
//! name lookups under way.)
//!
//! Each socket or file holds a [`Place`] for as long as its descriptor is open,
//! whoever holds it: a connection's place lives in the connection, which
//! its socket, its two streams and a send still under way all share, so
//! dropping the socket handle while keeping the streams frees nothing.
//! A place is given back when it is dropped, so it cannot be given back
//! twice or forgotten.

use crate::log_limit::{Kind, LogLines};
use crate::metrics::{self, TurnedAway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One cap: how many of one kind of descriptor the guests hold at once.
pub struct Cap {
    open: AtomicUsize,
    max: usize,
    counts: Counts,
}

/// What a cap counts, for its refusals' log lines.
#[derive(Clone, Copy)]
enum Counts {
    /// `--max-connections`.
    Sockets,
    /// `--max-files`.
    Files,
}

/// The host's two caps on the guests' descriptors, shared by every
/// guest instance.
#[derive(Clone)]
pub struct Caps {
    pub sockets: Arc<Cap>,
    pub files: Arc<Cap>,
}

impl Caps {
    pub fn new(max_connections: usize, max_files: usize) -> Caps {
        Caps { sockets: Cap::sockets(max_connections), files: Cap::files(max_files) }
    }
}

/// Who asks for a place: the refusal's log line names it.
#[derive(Clone, Copy)]
pub enum Asker {
    TcpSocket,
    UdpSocket,
    Client(SocketAddr),
    /// A file or directory opened under a `--dir` grant.
    File,
    /// A `--dir` grant's directory, for a new guest instance.
    Directory,
}

static REFUSED_SOCKETS: Kind = Kind::warn(LogLines::SocketRefused, "refused new sockets");
static REFUSED_CLIENTS: Kind =
    Kind::warn(LogLines::TurnedAwayAtCap, "clients turned away at the cap");
static REFUSED_FILES: Kind = Kind::warn(LogLines::FileRefused, "refused opened files");

impl Cap {
    /// The socket cap: `max` sockets (`--max-connections`).
    pub fn sockets(max: usize) -> Arc<Self> {
        Arc::new(Cap { open: AtomicUsize::new(0), max, counts: Counts::Sockets })
    }

    /// The file cap: `max` files and directories (`--max-files`).
    pub fn files(max: usize) -> Arc<Self> {
        Arc::new(Cap { open: AtomicUsize::new(0), max, counts: Counts::Files })
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
            Asker::File => (&REFUSED_FILES, "opening a file".to_string()),
            Asker::Directory => {
                (&REFUSED_FILES, "a --dir directory for a new instance".to_string())
            }
        };
        if !kind.admit() {
            return;
        }
        match self.counts {
            Counts::Sockets => tracing::warn!(
                event = "limit",
                "refused: {what}: the guests already hold {max} sockets (--max-connections {max})"
            ),
            Counts::Files => tracing::warn!(
                event = "limit",
                "refused: {what}: the guests already hold {max} files and directories \
                 (--max-files {max})"
            ),
        }
    }

    /// The places taken now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The most places there are.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One descriptor's place under its cap.
pub struct Place(Arc<Cap>);

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
        let cap = Cap::sockets(2);
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
