//! The clients, each served by an instance of its own: accepted within the
//! cap, checked against `--allow-client`, then given a fresh instance whose
//! stdin and stdout are the connection. When `run` returns the connection
//! closes with a FIN (after what the guest wrote has been sent); when the
//! instance traps, with a reset and one line naming the client; when the
//! connection goes first (the host closed it for idleness, the client
//! reset it, a send was given up), the instance is stopped: nothing it
//! does can reach the client any more.

use crate::instance::{run_once, Exited};
use crate::log_limit::{Kind, LogLines};
use crate::metrics::{self, TurnedAway};
use crate::sandbox::Stdio;
use crate::settings::{Settings, TraceDetail};
use crate::sockets::{spare, Asker, Caps, ClientStdio, Connection, Owner, Place, Tenant, Timeouts};
use crate::supervise::split_first_line;
use crate::supervise::Linked;
use crate::trace::Tracer;
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi::sockets::SocketAddrUse;

static FAILED: Kind =
    Kind::warn(LogLines::InstanceFailed, "guest instances that failed (clients reset)");
static EXITED: Kind =
    Kind::info(LogLines::InstanceExitedWithError, "guest instances that exited with an error");
static GONE: Kind = Kind::info(
    LogLines::InstanceStoppedWithConnection,
    "guest instances stopped with their connection",
);

pub struct Clients {
    /// What a new client's instance runs (SIGHUP replaces it).
    guest: RwLock<Arc<Linked>>,
    /// One permit for each instance alive: `--max-connections` of them.
    slots: Arc<Semaphore>,
    max: u32,
    /// The sockets and files the instances hold, their clients' included.
    caps: Caps,
    next_id: AtomicU64,
    /// The instances alive (the slots also count accepts under way).
    alive: Arc<AtomicUsize>,
    /// The most alive at once since the pool was last made afresh.
    peak: AtomicUsize,
}

/// One instance alive, counted while held.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Clients {
    pub fn new(guest: Linked, settings: &Settings) -> Arc<Clients> {
        let max = u32::try_from(settings.limits.max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        let caps = guest.shared.sandbox.caps.clone();
        Arc::new(Clients {
            guest: RwLock::new(Arc::new(guest)),
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            caps,
            next_id: AtomicU64::new(1),
            alive: Arc::default(),
            peak: AtomicUsize::new(0),
        })
    }

    /// What new clients get now.
    pub fn guest(&self) -> Arc<Linked> {
        Arc::clone(&self.guest.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The most instances alive at once since the last [`Clients::refresh`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The same guest, linked in a fresh pool (`trim.rs`): new clients
    /// get it; the old one is returned, to be let go.
    pub fn refresh(&self, guest: Linked) -> Arc<Linked> {
        self.peak.store(self.open(), Ordering::Relaxed);
        std::mem::replace(
            &mut *self.guest.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(guest),
        )
    }

    /// The caps the instances share (a swapped-in guest keeps them).
    pub fn caps(&self) -> Caps {
        self.caps.clone()
    }

    /// Clients from now on get `guest`; the instances running keep theirs.
    pub fn swap(&self, guest: Linked) {
        guest.serves();
        *self.guest.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(guest);
        tracing::info!(
            event = "swap",
            "swap: new clients get the new guest; the {} instances running finish with the old one",
            self.open()
        );
        metrics::swapped(metrics::SwapOutcome::TookOver);
    }

    /// The instances alive now.
    pub fn open(&self) -> usize {
        self.alive.load(Ordering::Relaxed)
    }

    /// Returns once every instance has ended.
    pub async fn all_left(&self) {
        let _all = self.slots.acquire_many(self.max).await;
    }

    /// accept(), for ever: one client for each free slot. A client beyond
    /// the cap is not accepted; it waits in the listen backlog.
    pub async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else { return };
            match listener.accept().await {
                Ok((stream, peer)) => self.start(stream, peer, slot),
                Err(e) => accept_failed(&listener, &e).await,
            }
        }
    }

    /// A client let in gets an instance of the current guest.
    fn start(&self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let guest = self.guest();
        let grants = &guest.shared.sandbox.grants;
        if !grants.check(peer, SocketAddrUse::TcpAccept) {
            crate::audit::log(grants, peer, SocketAddrUse::TcpAccept, false);
            metrics::turned_away(TurnedAway::NotAllowed);
            return reset(&stream);
        }
        let Some(place) = self.caps.sockets.take(Asker::Client(peer)) else {
            return reset(&stream);
        };
        let settings = &guest.shared.sandbox.settings;
        if !settings.nagle {
            let _ = stream.set_nodelay(true);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        crate::audit::log(grants, peer, SocketAddrUse::TcpAccept, true);
        let alive = self.alive.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(alive, Ordering::Relaxed);
        let held = (slot, place, Alive(Arc::clone(&self.alive)));
        let instance = format!("#{id} {peer}");
        tokio::spawn(
            crate::logging::INSTANCE.scope(instance, serve(guest, stream, peer, id, held)),
        );
    }
}

/// One client, from its instance's start to its connection's close.
async fn serve(
    guest: Arc<Linked>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    (_slot, place, _alive): (OwnedSemaphorePermit, Place, Alive),
) {
    let settings = Arc::clone(&guest.shared.sandbox.settings);
    let tracer = settings.trace.map(|detail| Tracer::new(detail == TraceDetail::Data));
    let tenant = Tenant::new(id);
    // What the host still does for the connection on its own (a send
    // under way) ends with this: when the instance has ended, and what it
    // wrote has gone out or the send has ended.
    let (instance, ends) = tokio::sync::watch::channel(());
    let timeouts =
        Timeouts { send: settings.limits.send_timeout, idle: settings.limits.idle_timeout };
    let owner = Owner { place, client: Some(tenant.client()), instance: ends, timeouts };
    let conn = Connection::new(stream, Some(peer), owner);
    let stdio = Stdio::Client { connection: ClientStdio::new(&conn, tracer), peer };
    // Boxed, so that dropping it below stops the instance there and then.
    let mut run = Box::pin(run_once(Arc::clone(&guest.shared), guest.pre.clone(), tenant, stdio));
    let ended = tokio::select! {
        ended = &mut run => ended,
        () = conn.gone() => Err(anyhow::anyhow!(Gone)),
    };
    // Stops the instance, if it still runs: its store goes, and with it
    // every handle it had on the connection.
    drop(run);
    match ended {
        Ok(()) => finish(&conn).await,
        Err(e) if e.downcast_ref::<Exited>().is_some() => {
            if EXITED.admit() {
                tracing::info!(event = "exit", "{e}; closing the connection");
            }
            finish(&conn).await
        }
        Err(e) if e.downcast_ref::<Gone>().is_some() => {
            if GONE.admit() {
                tracing::info!(
                    event = "instance-stopped",
                    %peer,
                    "stopped the instance of client {peer}: its connection is closed"
                );
            }
        }
        Err(e) => {
            conn.reset_at_close();
            if FAILED.admit() {
                let (summary, backtrace) = split_first_line(&e);
                tracing::warn!(
                    event = "instance-failed",
                    %peer,
                    backtrace,
                    "{summary}; its client {peer} was reset (the other clients are not affected)"
                );
            }
        }
    }
    drop(instance);
}

/// The host closed the connection (`--idle-timeout`), or it failed (a
/// reset, a send given up): the instance serving it is stopped.
#[derive(Debug)]
struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client's connection is closed")
    }
}

impl std::error::Error for Gone {}

/// After `run` returned: what the guest wrote goes to the client, then a
/// FIN; a client that does not take it within `--send-timeout` is reset
/// (the connection's background send does both).
async fn finish(conn: &Connection) {
    conn.shut_write();
    conn.all_sent().await;
}

/// Closing with SO_LINGER 0 resets the connection.
fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// An accept that failed: out of descriptors (turn the client away, so
/// that it does not wait for ever), or a client gone before it was
/// accepted (nothing to do).
async fn accept_failed(listener: &TcpListener, e: &std::io::Error) {
    let out_of_descriptors = spare::out_of_descriptors(e);
    if out_of_descriptors && !spare::turn_away_one(&SockRef::from(listener)) {
        // Nothing was waiting after all: look again a little later rather
        // than spin on a listener the system keeps reporting ready.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
