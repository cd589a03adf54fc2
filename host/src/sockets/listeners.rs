//! The listening sockets the host keeps, so that they outlive a guest.
//!
//! A guest that binds a `--listen` address and listens on it is lent a
//! listener the host opened for that address, instead of one of its own.
//! When the guest drops it, or crashes, the listener goes back to the host
//! still open: clients that connect meanwhile wait in its backlog, and the
//! next guest instance that binds the address (after `--restart`) is lent
//! the same listener and serves them.
//!
//! A grant with a fixed port is bound when the host starts, so a port that
//! is already taken is an error before the guest even loads. A grant of
//! port 0 ("let the system pick") is bound by the host when the guest
//! first binds port 0 on that IP; later binds of port 0 on that IP get it
//! back while it is free, and a port of their own while it is lent.
//!
//! A kept listener is the host's, whoever it is lent to: no guest changes
//! its options. What a guest sets on a socket bound to one is kept on a
//! socket of the guest's own (its "mirror", which reads back what the
//! system made of each value) and set on each client that guest accepts,
//! so an option reaches only the sockets its guest owns, and a guest that
//! fails, or is swapped out, leaves nothing on the listener for the next
//! one. Its listen backlog follows the turn: the backlog the instance
//! offered clients asked for, or the host's own when none listens.

use super::activation::Handed;
pub use super::listener::{new_socket, Listener};
use super::{spare, ErrorCode};
use anyhow::{bail, Context};
use socket2::{SockAddr, Socket};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use tokio::sync::watch;

/// The host's listeners, one for each `--listen` grant.
pub struct Listeners {
    granted: Vec<Mutex<Granted>>,
    /// Instances with ids up to this one are offered no client again: they
    /// drain (after a swap), or the host stops gracefully.
    retired: AtomicU64,
    /// Told whenever a turn changes (readiness may have).
    turns: watch::Sender<()>,
}

/// One granted address: the listener the host keeps there, and the guest
/// instances it is lent to.
struct Granted {
    grant: SocketAddr,
    kept: Option<Arc<Listener>>,
    /// Handed over by a service manager (socket activation): its socket
    /// outlives the host, and queues clients while the host is away.
    handed: bool,
    /// The guest instances holding a lease on it, oldest first.
    holders: Vec<Holder>,
    turn: Arc<Turn>,
}

struct Holder {
    id: u64,
    /// It listens (and is not just bound).
    listening: bool,
    /// The listen backlog it asked for.
    backlog: u32,
}

/// The listen backlog of a kept listener that no guest instance listens
/// on (std's, and wasmtime's, default): clients queue there for the next.
pub const HOST_BACKLOG: u32 = 128;

/// Which instance a kept listener's clients are offered to: the newest
/// holder that listens and is not retired. So during a swap the old
/// instance serves until the new one listens, and gets the listener back
/// at once if the new one fails first. The others wait for their turn.
struct Turn {
    /// The instance offered clients now (0: none).
    current: AtomicU64,
    /// Instances waiting for their turn, woken whenever `current` changes.
    waiting: Mutex<Vec<Waker>>,
}

impl Turn {
    /// Ready on `holder`'s turn. Either way its task is woken when the turn
    /// changes: one that has the turn waits on the listener, where only the
    /// last task to wait is kept, and another instance may take that place
    /// (while it has the turn); when the turn comes back, only this wakes it.
    fn poll(&self, holder: u64, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        // Under the lock: a change after this wakes the waker just left.
        match self.current.load(Ordering::SeqCst) == holder {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Gives the turn to `current`; whether that changed it.
    fn set(&self, current: u64) -> bool {
        if self.current.swap(current, Ordering::SeqCst) == current {
            return false;
        }
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        waiting.into_iter().for_each(Waker::wake);
        true
    }
}

impl Granted {
    /// Gives the turn to the newest holder that listens and is not retired,
    /// and the listener that holder's backlog (the host's, if none).
    fn pass_turn(&self, retired: u64, turns: &watch::Sender<()>) {
        let newest = self.holders.iter().rev().find(|h| h.listening && h.id > retired);
        if self.turn.set(newest.map_or(0, |h| h.id)) {
            if let Some(listener) = self.kept.as_ref().filter(|l| l.is_listening()) {
                let _ = listener.listen(newest.map_or(HOST_BACKLOG, |h| h.backlog));
            }
            turns.send_replace(());
        }
    }

    /// A listener for a grant of port 0, bound now on a port the system
    /// picks: the host's from the start, so that no guest socket (with
    /// options of its own) becomes the one it keeps.
    fn bind_port_zero(&mut self) -> Result<Arc<Listener>, ErrorCode> {
        let socket = new_socket(self.grant)?;
        socket.bind(&SockAddr::from(self.grant))?;
        let listener = Listener::new(socket)?;
        self.kept = Some(Arc::clone(&listener));
        Ok(listener)
    }
}

impl Listeners {
    /// The host's listeners: `handed` sockets (by a service manager, or
    /// the host this one upgrades) where their address is granted, and the
    /// granted addresses that name a port bound now. Must run inside the
    /// async runtime.
    pub fn open(grants: &[SocketAddr], mut handed: Vec<Handed>) -> anyhow::Result<Arc<Listeners>> {
        let mut granted = Vec::new();
        for &grant in grants {
            let (socket, outlives) = match (take_handed(&mut handed, grant), grant.port()) {
                (Some(given), _) => (Some(given.socket), given.outlives_host),
                (None, 0) => (None, false),
                (None, _) => (Some(bind_reserved(grant)?), false),
            };
            let kept = socket.map(Listener::new).transpose().context("registering a listener")?;
            let turn = Arc::new(Turn { current: AtomicU64::new(0), waiting: Mutex::default() });
            let handed = outlives;
            granted.push(Mutex::new(Granted { grant, kept, handed, holders: Vec::new(), turn }));
        }
        if let Some(extra) = handed.first() {
            bail!(
                "the service manager passed a listening socket on {} that no --listen grants",
                extra.addr
            );
        }
        spare::reserve();
        let turns = watch::Sender::new(());
        Ok(Arc::new(Listeners { granted, retired: AtomicU64::new(0), turns }))
    }

    /// At bind(addr) by guest instance `holder`: a kept listener for this
    /// address, lent to it (it is offered clients once it listens);
    /// `address-in-use` if this instance (or a newer one) already holds
    /// it; `None` when the host keeps nothing for `addr` and the guest
    /// binds a socket of its own.
    pub fn lend(
        self: &Arc<Self>,
        addr: SocketAddr,
        holder: u64,
    ) -> Option<Result<Lease, ErrorCode>> {
        let (index, mut place) = self.granted_covering(addr)?;
        let taken = place.holders.last().is_some_and(|newest| newest.id >= holder);
        let listener = match (&place.kept, taken) {
            (Some(listener), false) => Arc::clone(listener),
            // Port 0 asks for any free port: one of its own will do.
            _ if addr.port() == 0 && taken => return None,
            (Some(_), true) => return Some(Err(ErrorCode::AddressInUse)),
            (None, _) if place.grant.port() == 0 => match place.bind_port_zero() {
                Ok(listener) => listener,
                Err(e) => return Some(Err(e)),
            },
            (None, _) => return None,
        };
        place.holders.push(Holder { id: holder, listening: false, backlog: HOST_BACKLOG });
        Some(Ok(self.lease(index, &place, listener, holder)))
    }

    fn granted_covering(&self, addr: SocketAddr) -> Option<(usize, MutexGuard<'_, Granted>)> {
        self.granted.iter().enumerate().find_map(|(index, place)| {
            let place = lock(place);
            let kept_port = place.kept.as_ref().map(|l| l.local_addr().port());
            let covers = place.grant.ip() == addr.ip()
                && (addr.port() == place.grant.port() || Some(addr.port()) == kept_port);
            covers.then_some((index, place))
        })
    }

    fn lease(
        self: &Arc<Self>,
        index: usize,
        place: &Granted,
        listener: Arc<Listener>,
        holder: u64,
    ) -> Lease {
        let kept =
            Kept { listeners: Arc::clone(self), index, turn: Arc::clone(&place.turn), holder };
        Lease { listener, place: Some(kept) }
    }

    /// Changes one granted address's holders, then passes its turn on.
    fn update(&self, index: usize, change: impl FnOnce(&mut Vec<Holder>)) {
        let mut place = lock(&self.granted[index]);
        change(&mut place.holders);
        place.pass_turn(self.retired.load(Ordering::SeqCst), &self.turns);
    }

    /// The granted addresses (their indices) guest instance `holder` holds a lease on.
    pub fn held_by(&self, holder: u64) -> Vec<usize> {
        let holds = |(index, place): (usize, &Mutex<Granted>)| {
            lock(place).holders.iter().any(|h| h.id == holder).then_some(index)
        };
        self.granted.iter().enumerate().filter_map(holds).collect()
    }

    /// The granted addresses where guest instance `holder` listens now.
    pub fn listened_on_by(&self, holder: u64) -> Vec<usize> {
        let listens = |(index, place): (usize, &Mutex<Granted>)| {
            let place = lock(place);
            place.holders.iter().any(|h| h.id == holder && h.listening).then_some(index)
        };
        self.granted.iter().enumerate().filter_map(listens).collect()
    }

    /// The granted addresses with a listener the host keeps.
    pub fn kept(&self) -> Vec<usize> {
        let kept =
            |(index, place): (usize, &Mutex<Granted>)| lock(place).kept.is_some().then_some(index);
        self.granted.iter().enumerate().filter_map(kept).collect()
    }

    /// Offers no client to instance `id` or any older one from now on.
    pub fn retire_through(&self, id: u64) {
        self.retired.fetch_max(id, Ordering::SeqCst);
        for index in 0..self.granted.len() {
            self.update(index, |_| {});
        }
    }

    /// A graceful stop: offers no client to any guest instance from now
    /// on, and closes the listeners the host opened, so that new clients
    /// are refused at once rather than left waiting (one a service manager
    /// handed over stays open: it queues clients for the next start).
    pub fn stop_offering(&self) {
        self.retire_through(u64::MAX);
        for place in &self.granted {
            let place = lock(place);
            if let (Some(listener), false) = (&place.kept, place.handed) {
                Listener::close(listener);
            }
        }
    }

    /// Copies of the listeners the host keeps, for a new host (an
    /// upgrade): each, and whether a service manager holds it too.
    pub fn handover(&self) -> std::io::Result<Vec<(Socket, bool)>> {
        let mut copies = Vec::new();
        for place in self.granted.iter().map(lock) {
            if let Some(kept) = &place.kept {
                copies.push((kept.socket().try_clone()?, place.handed));
            }
        }
        Ok(copies)
    }

    /// Offers no client to any guest instance from now on, and leaves the
    /// listeners open: another host (an upgrade) accepts from them now.
    pub fn hand_over(&self) {
        self.retire_through(u64::MAX);
    }

    /// The first granted address no guest instance serves now (no listener
    /// kept there yet, or none with its turn); None when all are served.
    pub fn unserved(&self) -> Option<SocketAddr> {
        self.granted.iter().map(lock).find_map(|place| {
            let served = place.kept.is_some() && place.turn.current.load(Ordering::SeqCst) != 0;
            (!served).then_some(place.grant)
        })
    }

    /// Changes whenever a turn does (so readiness may have).
    pub fn turns(&self) -> watch::Receiver<()> {
        self.turns.subscribe()
    }

    /// A granted address, by its index, for log lines.
    pub fn grant(&self, index: usize) -> SocketAddr {
        lock(&self.granted[index]).grant
    }
}

/// The handed socket for `grant`: on its address, or (a grant of port 0,
/// "any port") on its IP address.
pub fn take_handed(handed: &mut Vec<Handed>, grant: SocketAddr) -> Option<Handed> {
    let matches = |h: &Handed| h.addr == grant || (grant.port() == 0 && h.addr.ip() == grant.ip());
    let at = handed.iter().position(matches)?;
    Some(handed.swap_remove(at))
}

/// A listener in a guest socket's hands: kept by the host (given back when
/// the socket is dropped) or the guest's own (closed with it).
pub struct Lease {
    pub listener: Arc<Listener>,
    place: Option<Kept>,
}

struct Kept {
    listeners: Arc<Listeners>,
    index: usize,
    turn: Arc<Turn>,
    holder: u64,
}

impl Lease {
    /// A guest's own listener, in its hands alone.
    pub fn own(listener: Arc<Listener>) -> Lease {
        Lease { listener, place: None }
    }

    /// The granted address (its index) of a listener the host keeps; None
    /// for the guest's own.
    pub fn kept_address(&self) -> Option<usize> {
        self.place.as_ref().map(|kept| kept.index)
    }

    /// Whether this lease is offered clients now: a guest's own listener
    /// always is; a kept one on its holder's turn.
    pub fn is_current(&self) -> bool {
        self.place
            .as_ref()
            .is_none_or(|kept| kept.turn.current.load(Ordering::SeqCst) == kept.holder)
    }

    /// Ready on this lease's turn; the task is woken when the turn changes
    /// (until its turn, never by the listener, whose readiness is the
    /// turn's holder's to wait on).
    pub fn poll_turn(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
        match &self.place {
            None => Poll::Ready(()),
            Some(kept) => kept.turn.poll(kept.holder, cx),
        }
    }

    /// listen(backlog) by its holder: the listener listens (its first
    /// listen makes it do so), and the holder may get the turn, and with it
    /// the backlog it asked for.
    pub fn listen(&self, backlog: u32) -> Result<(), ErrorCode> {
        let Some(kept) = &self.place else { return self.listener.listen(backlog) };
        if !self.listener.is_listening() {
            self.listener.listen(backlog)?;
        }
        let holder = kept.holder;
        kept.listeners.update(kept.index, |holders| {
            for h in holders.iter_mut().filter(|h| h.id == holder) {
                (h.listening, h.backlog) = (true, backlog);
            }
        });
        Ok(())
    }

    /// A new backlog, after listen: a guest's own listener takes it at
    /// once; a kept one when its holder has the turn (now or later).
    pub fn set_backlog(&self, backlog: u32) -> Result<(), ErrorCode> {
        let Some(kept) = &self.place else { return self.listener.listen(backlog) };
        let holder = kept.holder;
        kept.listeners.update(kept.index, |holders| {
            holders.iter_mut().filter(|h| h.id == holder).for_each(|h| h.backlog = backlog)
        });
        if self.is_current() {
            self.listener.listen(backlog)?;
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(kept) = &self.place {
            let holder = kept.holder;
            kept.listeners.update(kept.index, |holders| holders.retain(|h| h.id != holder));
        }
    }
}

fn lock(place: &Mutex<Granted>) -> MutexGuard<'_, Granted> {
    place.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds, without listening, an address the host will keep: the port is
/// reserved from now on, and a client connecting before the guest listens
/// is refused (and may retry) rather than queued.
pub fn bind_reserved(addr: SocketAddr) -> anyhow::Result<Socket> {
    let socket = new_socket(addr).context("creating a socket for a listen address")?;
    match socket.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(socket),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the address is already in use \
             (is another server running? choose another with --listen)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

#[cfg(test)]
mod tests {
    //! Lending the listeners the host keeps, and whose turn it is, without
    //! a guest: leases taken as guest instances 1, 2, 3 would take them.

    use super::*;

    fn run(test: impl FnOnce()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        test();
    }

    fn lend(listeners: &Arc<Listeners>, addr: SocketAddr, holder: u64) -> Lease {
        match listeners.lend(addr, holder) {
            Some(Ok(lease)) => lease,
            Some(Err(e)) => panic!("instance {holder} was refused: {e:?}"),
            None => panic!("instance {holder} was lent nothing"),
        }
    }

    #[test]
    fn the_newest_instance_listening_has_the_turn_and_an_older_one_gets_it_back() {
        run(|| {
            let grant: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let listeners = Listeners::open(&[grant], Vec::new()).unwrap();
            assert_eq!(listeners.unserved(), Some(grant), "nobody listens yet");
            assert!(listeners.kept().is_empty(), "port 0: bound at the first bind");

            let first = lend(&listeners, grant, 1);
            let addr = first.listener.local_addr();
            assert_eq!(listeners.kept(), vec![0]);
            assert!(!first.is_current(), "bound, not listening: no turn");
            first.listen(64).unwrap();
            assert!(first.is_current());
            assert_eq!(listeners.unserved(), None);

            // A swap: instance 2 is lent the same listener, and takes the
            // turn once it listens; instance 1 is offered no client then.
            let second = lend(&listeners, addr, 2);
            assert!(Arc::ptr_eq(&first.listener, &second.listener), "the same listener");
            assert!(first.is_current(), "until the new one listens");
            second.listen(8).unwrap();
            assert!(second.is_current() && !first.is_current());
            assert_eq!(listeners.held_by(1), vec![0]);
            assert_eq!(listeners.listened_on_by(2), vec![0]);

            // The new one fails: the old one has the turn again.
            drop(second);
            assert!(first.is_current());

            // Retired (after a swap that took over): no turn for it.
            listeners.retire_through(1);
            assert!(!first.is_current());
            assert_eq!(listeners.unserved(), Some(grant));
            drop(first);
            assert!(listeners.held_by(1).is_empty());
        });
    }

    #[test]
    fn a_granted_address_is_lent_once_to_each_instance() {
        run(|| {
            let holder = new_socket("127.0.0.1:0".parse().unwrap()).unwrap();
            holder.bind(&SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap())).unwrap();
            let grant = holder.local_addr().unwrap().as_socket().unwrap();
            let listeners = Listeners::open(&[grant], Vec::new()).unwrap();
            let _first = lend(&listeners, grant, 2);
            // Again by the same instance, or by an older one: in use.
            assert!(matches!(listeners.lend(grant, 2), Some(Err(ErrorCode::AddressInUse))));
            assert!(matches!(listeners.lend(grant, 1), Some(Err(ErrorCode::AddressInUse))));
            // An address the host keeps nothing for: the guest's own.
            assert!(listeners.lend("127.0.0.2:1".parse().unwrap(), 3).is_none());
        });
    }

    #[test]
    fn a_graceful_stop_offers_no_client_to_anyone() {
        run(|| {
            let grant: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let listeners = Listeners::open(&[grant], Vec::new()).unwrap();
            let lease = lend(&listeners, grant, 1);
            lease.listen(16).unwrap();
            listeners.stop_offering();
            assert!(!lease.is_current());
            let later = lend(&listeners, lease.listener.local_addr(), 2);
            later.listen(16).unwrap();
            assert!(!later.is_current(), "retired through every instance");
        });
    }
}
