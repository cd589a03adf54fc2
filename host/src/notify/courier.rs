//! Notifications the service manager has no room for yet.
//!
//! The notify socket is a datagram socket, and its queue is short (Linux's
//! `net.unix.max_dgram_qlen`: 10 by default, 512 where systemd sets it).
//! When the service manager falls behind reading it, a send waits for
//! room, and a send on the serving thread must never wait: every client
//! would wait with it. So the serving thread sends without waiting, and
//! what finds no room comes here, to a thread of its own that waits for
//! room and sends in order.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

/// At most this many notifications wait; more are dropped, one line each.
const WAITING_AT_MOST: usize = 16;

pub struct Courier {
    /// None if its thread could not start (then nothing waits: dropped).
    posted: Option<SyncSender<String>>,
    /// Posted and not yet sent.
    waiting: Arc<AtomicUsize>,
}

impl Courier {
    /// A thread that sends to `addr` over a socket of its own that waits.
    pub fn start(addr: SocketAddr) -> Courier {
        let (posted, arriving) = sync_channel::<String>(WAITING_AT_MOST);
        let waiting = Arc::new(AtomicUsize::new(0));
        let sent = Arc::clone(&waiting);
        let started = std::thread::Builder::new().name("notify".into()).spawn(move || {
            let socket = UnixDatagram::unbound().ok();
            for message in arriving {
                if let Some(socket) = &socket {
                    let _ = socket.send_to_addr(message.as_bytes(), &addr);
                }
                sent.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Courier { posted: started.ok().map(|_| posted), waiting }
    }

    /// Whether notifications still wait: a new one goes behind them.
    pub fn behind(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Sends `message` once the service manager has room (never waits).
    pub fn post(&self, message: &str) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let posted = self.posted.as_ref().map(|posted| posted.try_send(message.to_string()));
        if !matches!(posted, Some(Ok(()))) {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!(
                "the service manager reads no notifications: {first} not sent ({WAITING_AT_MOST} \
                 already wait)"
            );
        }
    }
}
