//! The clients, each served by an instance of its own: accepted within the
//! cap, checked against `--allow-client`, then given a fresh instance whose
//! stdin and stdout are the connection. When `run` returns the connection
//! closes with a FIN (after what the guest wrote has been sent); when the
//! instance traps, with a reset and one line naming the client.

use crate::instance::{run_once, Exited};
use crate::log_limit::Kind;
use crate::metrics::{self, TurnedAway};
use crate::run::split_first_line;
use crate::sandbox::Stdio;
use crate::settings::{Settings, TraceDetail};
use crate::sockets::{spare, Asker, ClientStdio, Place, SocketCap, Tenant};
use crate::swap::Guest;
use crate::trace::Tracer;
use socket2::SockRef;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::OutputStream;
use wasmtime_wasi::sockets::SocketAddrUse;

static FAILED: Kind = Kind::warn("guest instances that failed (clients reset)");
static EXITED: Kind = Kind::info("guest instances that exited with an error");

pub struct Clients {
    /// What a new client's instance runs (SIGHUP replaces it).
    guest: RwLock<Arc<Guest>>,
    /// One permit for each instance alive: `--max-connections` of them.
    slots: Arc<Semaphore>,
    max: u32,
    /// The sockets the instances hold, their clients' included.
    cap: Arc<SocketCap>,
    next_id: AtomicU64,
    /// The instances alive (the slots also count accepts under way).
    alive: Arc<AtomicUsize>,
}

/// One instance alive, counted while held.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Clients {
    pub fn new(guest: Guest, settings: &Settings) -> Arc<Clients> {
        let max = u32::try_from(settings.limits.max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        let cap = Arc::clone(&guest.shared.sandbox.cap);
        Arc::new(Clients {
            guest: RwLock::new(Arc::new(guest)),
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            cap,
            next_id: AtomicU64::new(1),
            alive: Arc::default(),
        })
    }

    /// The socket cap the instances share (a swapped-in guest keeps it).
    pub fn cap(&self) -> Arc<SocketCap> {
        Arc::clone(&self.cap)
    }

    /// Clients from now on get `guest`; the instances running keep theirs.
    pub fn swap(&self, guest: Guest) {
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
        let guest = Arc::clone(&self.guest.read().unwrap_or_else(|e| e.into_inner()));
        let grants = &guest.shared.sandbox.grants;
        if !grants.check(peer, SocketAddrUse::TcpAccept) {
            grants.log(peer, SocketAddrUse::TcpAccept, false);
            metrics::turned_away(TurnedAway::NotAllowed);
            return reset(&stream);
        }
        let Some(place) = self.cap.take(Asker::Client(peer)) else { return reset(&stream) };
        let settings = &guest.shared.sandbox.settings;
        if !settings.nagle {
            let _ = stream.set_nodelay(true);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        grants.log(peer, SocketAddrUse::TcpAccept, true);
        self.alive.fetch_add(1, Ordering::Relaxed);
        let held = (slot, place, Alive(Arc::clone(&self.alive)));
        let span = tracing::info_span!("instance", client = %format_args!("#{id} {peer}"));
        tokio::spawn(serve(guest, stream, peer, id, held).instrument(span));
    }
}

/// One client, from its instance's start to its connection's close.
async fn serve(
    guest: Arc<Guest>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    _held: (OwnedSemaphorePermit, Place, Alive),
) {
    let settings = Arc::clone(&guest.shared.sandbox.settings);
    let tracer = settings.trace.map(|detail| Tracer::new(detail == TraceDetail::Data));
    let stream = Arc::new(stream);
    let connection = ClientStdio::new(&stream, tracer);
    // A stdout handle of the host's own, for the last flush.
    let output = StdoutStream::p2_stream(&connection);
    let tenant = Tenant::new(id);
    let _client = tenant.client();
    let idle = settings.limits.idle_timeout.map(|t| (connection.clone(), t));
    let stdio = Stdio::Client { connection, peer };
    let run = run_once(Arc::clone(&guest.shared), guest.pre.clone(), tenant, stdio);
    let ended = match idle {
        None => run.await,
        Some((connection, timeout)) => {
            tokio::pin!(run);
            tokio::select! {
                ended = &mut run => ended,
                () = connection.close_when_idle(timeout, peer) => run.await,
            }
        }
    };
    let socket = SockRef::from(&*stream);
    match ended {
        Ok(()) => finish(output, &socket, settings.limits.send_timeout).await,
        Err(e) if e.downcast_ref::<Exited>().is_some() => {
            if EXITED.admit() {
                tracing::info!(event = "exit", "{e}; closing the connection");
            }
            finish(output, &socket, settings.limits.send_timeout).await
        }
        Err(e) => {
            let _ = socket.set_linger(Some(Duration::ZERO));
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
}

/// After `run` returned: what the guest wrote goes to the client, then a
/// FIN; a client that does not take it within `--send-timeout` is reset.
async fn finish(mut output: Box<dyn OutputStream>, socket: &SockRef<'_>, within: Duration) {
    let sent = match output.flush() {
        Ok(()) => tokio::time::timeout(within, output.ready()).await.is_ok(),
        // The client has gone: nothing to send.
        Err(_) => true,
    };
    match sent {
        true => {
            let _ = socket.shutdown(Shutdown::Write);
        }
        false => {
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
    }
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
