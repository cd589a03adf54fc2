//! One TCP connection, shared by the guest's socket and its two streams
//! (or, with `--per-client`, by every stdin and stdout handle), its sending
//! side (what `check-write` allows, a write sent at once, the rest in one
//! background send), and what the host does for it on its own: finish a
//! send the system did not take at once, and close it when it sits idle.
//!
//! The connection owns what it costs: its place under the socket cap and
//! its count as a client of its guest instance go when the connection does,
//! whoever held it last (the socket, a stream, or a send still under way).
//! What the host does for it on its own belongs to its guest instance too:
//! when the instance ends, a send under way stops at once (the connection
//! is reset: the client must not take what it got for the whole), and once
//! the guest has let go of every handle, it has `--send-timeout` to finish
//! before the connection is reset. The idle watch ends with the connection.

use super::cap::Place;
use super::read_wake::{InList, ReadWake, Woken};
use super::tenant::Client;
use crate::ledger::MAX_CHUNK;
use crate::log_limit::{Kind, LogLines};
use crate::metrics::{self, Closed, METRICS};
use bytes::Bytes;
use socket2::SockRef;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use wasmtime_wasi::p2::{StreamError, StreamResult};

/// What ends with a guest instance: the host's tasks for its connections.
/// The sending half lives in the instance's store; when the store goes,
/// every receiver sees it.
pub type InstanceEnds = watch::Receiver<()>;

/// How long the host keeps going on its own for a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A send still under way after the guest let go of the connection.
    pub send: Duration,
    /// `--idle-timeout`: a client with nothing received or sent for this long.
    pub idle: Option<Duration>,
}

/// What a connection belongs to.
pub struct Owner {
    pub place: Place,
    pub client: Option<Client>,
    pub instance: InstanceEnds,
    pub timeouts: Timeouts,
}

pub struct Connection {
    stream: TcpStream,
    /// The client's address (accepted connections), for log lines.
    pub peer: Option<SocketAddr>,
    /// shutdown(receive), or closed for idleness: reads report `closed`.
    read_shut: AtomicBool,
    /// What the last poll learnt about readability, and the waker it left
    /// with the runtime (`read_wake.rs`).
    read_wake: Arc<ReadWake>,
    read_waker: Waker,
    /// shutdown(send), or the output stream dropped: send the FIN once
    /// everything written has gone out.
    write_shut: AtomicBool,
    /// A background send is under way.
    sending: AtomicBool,
    /// Who to wake when it is done (a `poll` waiting to write).
    when_sent: Mutex<Option<Waker>>,
    /// The output stream's state (`streams.rs`).
    output: Mutex<WriteState>,
    /// The guest's handles on it (socket, input, output) still open.
    held: AtomicUsize,
    let_go: Notify,
    /// With `--idle-timeout`: when a byte last moved, in ms since
    /// [`since_epoch`]'s start, and the task that watches it.
    last_active: Option<AtomicU64>,
    idle_watch: OnceLock<tokio::task::AbortHandle>,
    /// Reset, not closed: no FIN after the last byte sent.
    reset: AtomicBool,
    instance: InstanceEnds,
    send_timeout: Duration,
    /// The host closed the connection (idle), or it failed (a reset, a
    /// send given up): whoever serves it through stdio stops its instance.
    gone: AtomicBool,
    gone_now: Notify,
    /// A background send ended.
    sent_now: Notify,
    _client: Option<Client>,
    _place: Place,
}

impl Connection {
    pub fn new(stream: TcpStream, peer: Option<SocketAddr>, owner: Owner) -> Arc<Connection> {
        let idle = owner.timeouts.idle.filter(|_| owner.client.is_some());
        let (read_wake, read_waker) = ReadWake::new();
        let conn = Arc::new(Connection {
            stream,
            peer,
            read_shut: AtomicBool::new(false),
            read_wake,
            read_waker,
            write_shut: AtomicBool::new(false),
            sending: AtomicBool::new(false),
            when_sent: Mutex::new(None),
            output: Mutex::new(WriteState::Ready { permit: 0 }),
            held: AtomicUsize::new(0),
            let_go: Notify::new(),
            last_active: idle.map(|_| AtomicU64::new(since_epoch())),
            idle_watch: OnceLock::new(),
            reset: AtomicBool::new(false),
            instance: owner.instance,
            send_timeout: owner.timeouts.send,
            gone: AtomicBool::new(false),
            gone_now: Notify::new(),
            sent_now: Notify::new(),
            _client: owner.client,
            _place: owner.place,
        });
        if let Some(timeout) = idle {
            let instance = conn.instance.clone();
            let watch = tokio::spawn(close_when_idle(Arc::downgrade(&conn), timeout, instance));
            let _ = conn.idle_watch.set(watch.abort_handle());
        }
        conn
    }

    pub fn shut_read(&self) {
        self.read_shut.store(true, SeqCst);
        let _ = SockRef::from(&self.stream).shutdown(Shutdown::Read);
        self.read_wake.wake_task();
    }

    /// The FIN goes out now, or after the background send's last byte.
    pub fn shut_write(&self) {
        self.write_shut.store(true, SeqCst);
        if !self.sending.load(SeqCst) {
            let _ = SockRef::from(&self.stream).shutdown(Shutdown::Write);
        }
    }

    /// A byte moved (with `--idle-timeout`; nothing to do otherwise).
    pub fn touch(&self) {
        if let Some(last) = &self.last_active {
            last.store(since_epoch(), SeqCst);
        }
    }

    /// Sends `rest` in the background (the guest's write returned): the
    /// task stops when the instance ends, or `send_timeout` after the guest
    /// let go of the connection if the peer has not taken it all by then.
    pub fn send_in_background(self: &Arc<Self>, rest: Bytes) -> JoinHandle<std::io::Result<()>> {
        self.sending.store(true, SeqCst);
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            let mut instance = conn.instance.clone();
            let result = tokio::select! {
                sent = send_all(&conn, rest) => sent.inspect_err(|_| conn.failed()),
                _ = instance.changed() => Err(conn.reset(ErrorKind::ConnectionAborted)),
                () = conn.abandoned() => Err(conn.give_up()),
            };
            conn.sent_all();
            result
        })
    }

    fn sent_all(&self) {
        self.sending.store(false, SeqCst);
        if let Some(waker) = self.when_sent.lock().unwrap_or_else(|e| e.into_inner()).take() {
            waker.wake();
        }
        if self.write_shut.load(SeqCst) && !self.reset.load(SeqCst) {
            let _ = SockRef::from(&self.stream).shutdown(Shutdown::Write);
        }
        self.sent_now.notify_waiters();
    }

    /// Returns once no background send is under way: everything written
    /// has gone to the system, or the send ended (`--send-timeout`, a
    /// failure, the instance's end).
    pub async fn all_sent(&self) {
        loop {
            let sent = self.sent_now.notified();
            tokio::pin!(sent);
            sent.as_mut().enable();
            if !self.sending.load(SeqCst) {
                return;
            }
            sent.await;
        }
    }

    /// The connection failed (a reset, a broken pipe): it is gone.
    pub(super) fn failed(&self) {
        self.gone.store(true, SeqCst);
        self.gone_now.notify_waiters();
    }

    /// Returns once the host has closed the connection on its own or it
    /// has failed: nothing more can pass on it.
    pub async fn gone(&self) {
        loop {
            let gone = self.gone_now.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.gone.load(SeqCst) {
                return;
            }
            gone.await;
        }
    }

    /// Ends the connection with a reset when it closes (SO_LINGER 0): its
    /// instance failed, and the client must not take what it got for the
    /// whole.
    pub fn reset_at_close(&self) {
        let _ = self.reset(ErrorKind::ConnectionAborted);
    }

    /// Ends the connection with a reset once the last hold on it goes
    /// (SO_LINGER 0, and no FIN before): bytes were left unsent.
    fn reset(&self, why: ErrorKind) -> std::io::Error {
        self.reset.store(true, SeqCst);
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        why.into()
    }

    /// Returns `send_timeout` after the guest has let go of every handle.
    async fn abandoned(&self) {
        loop {
            let let_go = self.let_go.notified();
            tokio::pin!(let_go);
            let_go.as_mut().enable();
            if self.held.load(SeqCst) == 0 {
                break;
            }
            let_go.await;
        }
        tokio::time::sleep(self.send_timeout).await;
    }

    /// The peer did not take what was left in time: reset the connection
    /// (it closes with the task's hold on it, the last one).
    fn give_up(&self) -> std::io::Error {
        static GAVE_UP: Kind = Kind::warn(LogLines::SendGivenUp, "sends given up");
        let error = self.reset(ErrorKind::TimedOut);
        self.failed();
        metrics::closed(Closed::SendTimeout);
        if GAVE_UP.admit() {
            let peer = self.peer.map_or_else(|| "a peer".to_string(), |p| p.to_string());
            tracing::warn!(
                event = "limit",
                "gave up sending to {peer}: it took nothing more for {:?} after the guest let go \
                 of the connection (--send-timeout); reset it",
                self.send_timeout
            );
        }
        error
    }

    /// Closed for idleness: the guest's reads and writes report `closed`,
    /// the client gets a FIN.
    fn close_idle(&self, timeout: Duration) {
        static CLOSED_IDLE: Kind = Kind::info(LogLines::IdleClientClosed, "idle clients closed");
        metrics::closed(Closed::IdleTimeout);
        self.read_shut.store(true, SeqCst);
        self.write_shut.store(true, SeqCst);
        let _ = SockRef::from(&self.stream).shutdown(Shutdown::Both);
        self.read_wake.wake_task();
        self.failed();
        if CLOSED_IDLE.admit() {
            let peer = self.peer.map_or_else(|| "a client".to_string(), |p| p.to_string());
            tracing::info!(
                event = "idle",
                "closed the connection of {peer}: nothing received or sent for {timeout:?} \
                 (--idle-timeout)"
            );
        }
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_active.as_ref().map_or(0, |last| last.load(SeqCst));
        Duration::from_millis(since_epoch().saturating_sub(last))
    }
}

impl Drop for Connection {
    /// The idle watch goes with the connection, not at its next wake-up:
    /// a client opening and closing connections cannot pile them up.
    fn drop(&mut self) {
        if let Some(watch) = self.idle_watch.get() {
            watch.abort();
        }
    }
}

/// The guest's hold on a connection: its socket's, or one stream's.
/// When the last one goes, a send still under way gets its deadline.
pub struct Held(Arc<Connection>);

impl Held {
    pub fn new(conn: &Arc<Connection>) -> Held {
        conn.held.fetch_add(1, SeqCst);
        Held(Arc::clone(conn))
    }
}

impl std::ops::Deref for Held {
    type Target = Arc<Connection>;
    fn deref(&self) -> &Arc<Connection> {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.held.fetch_sub(1, SeqCst) == 1 {
            self.0.let_go.notify_waiters();
        }
    }
}

async fn send_all(conn: &Connection, mut bytes: Bytes) -> std::io::Result<()> {
    while !bytes.is_empty() {
        conn.stream.writable().await?;
        match conn.stream.try_write(&bytes) {
            Ok(n) => {
                drop(bytes.split_to(n));
                conn.touch();
                METRICS.sent_bytes.inc_by(n as u64);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `--idle-timeout`: wakes when the connection would have been idle for
/// `timeout`, and closes it if nothing moved meanwhile. Holds the
/// connection only while it looks, so a connection the guest closed goes
/// at once (and this task at its next wake-up, or with the instance).
async fn close_when_idle(conn: Weak<Connection>, timeout: Duration, mut instance: InstanceEnds) {
    loop {
        let Some(live) = conn.upgrade() else { return };
        let idle = live.idle_for();
        if idle >= timeout {
            return live.close_idle(timeout);
        }
        drop(live);
        tokio::select! {
            () = tokio::time::sleep(timeout - idle) => {}
            _ = instance.changed() => return,
        }
    }
}

/// Milliseconds since the first call: a clock an atomic can hold.
pub(super) fn since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The sending side of a connection (written by its output stream,
/// `streams.rs`).
enum WriteState {
    /// May write up to `permit` bytes (granted by the last check-write).
    Ready {
        permit: usize,
    },
    /// A background task is sending what the system did not take at once.
    Sending(JoinHandle<std::io::Result<()>>),
    /// A write failed; the next call reports it, then the stream is closed.
    Failed(std::io::Error),
    Closed,
}

impl Connection {
    /// Readable, or at its end: a read would not answer "nothing yet".
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_shut.load(SeqCst) {
            return Poll::Ready(());
        }
        // The runtime will hold `cx`'s waker, not the connection's own.
        self.read_wake.disarm();
        self.stream.poll_read_ready(cx).map(|_| ())
    }

    /// `poll_readable` for the host's own poll, in its `round`: a
    /// connection found not readable in this round, with no event since,
    /// is answered without asking the runtime, and a wake-up tells
    /// `woken` its place (`read_wake.rs`; stamped first, `stamp_read`).
    pub fn poll_readable_in(
        &self,
        round: u64,
        woken: &Arc<Woken>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        // Armed first: shutting the reading side disarms (`shut_read`).
        if self.read_wake.is_armed(round) {
            return Poll::Pending;
        }
        if self.read_shut.load(SeqCst) {
            return Poll::Ready(());
        }
        self.read_wake.arm(round, cx.waker(), woken);
        match self.stream.poll_read_ready(&mut Context::from_waker(&self.read_waker)) {
            Poll::Ready(_) => {
                self.read_wake.disarm();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Notes this connection's place in a poll's list before the poll
    /// asks `poll_readable_in`; the place it had before.
    pub fn stamp_read(&self, place: InList) -> InList {
        self.read_wake.stamp(place)
    }

    /// Writable (once a background send, if any, is done).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.sending.load(SeqCst) {
            *self.when_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.sending.load(SeqCst) {
                return Poll::Pending;
            }
        }
        if self.write_shut.load(SeqCst) {
            return Poll::Ready(());
        }
        self.stream.poll_write_ready(cx).map(|_| ())
    }
}

impl WriteState {
    /// Settles a finished background send; Pending while it runs.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let WriteState::Sending(task) = self {
            let outcome = match std::pin::Pin::new(task).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(outcome)) => outcome,
                Poll::Ready(Err(join)) => Err(std::io::Error::other(join)),
            };
            *self = match outcome {
                Ok(()) => WriteState::Ready { permit: 0 },
                Err(e) => WriteState::Failed(e),
            };
        }
        Poll::Ready(())
    }

    /// The error to report now, if the stream can no longer be written.
    fn check_open(&mut self, conn: &Connection) -> StreamResult<()> {
        let _ = self.poll_sent(&mut noop_context());
        if conn.write_shut.load(SeqCst) {
            *self = WriteState::Closed;
        }
        match std::mem::replace(self, WriteState::Closed) {
            WriteState::Failed(e) => Err(failure(e)),
            WriteState::Closed => Err(StreamError::Closed),
            open => {
                *self = open;
                Ok(())
            }
        }
    }
}

impl Connection {
    fn output(&self) -> MutexGuard<'_, WriteState> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn check_write_now(&self) -> StreamResult<usize> {
        let mut state = self.output();
        state.check_open(self)?;
        let WriteState::Ready { permit } = &mut *state else { return Ok(0) };
        let writable = self.stream.poll_write_ready(&mut noop_context()).is_ready();
        *permit = if writable { MAX_CHUNK } else { 0 };
        Ok(*permit)
    }

    /// send() of `bytes`, at once; what the system does not take is copied
    /// for a background task to send.
    pub(super) fn write_now(self: &Arc<Self>, bytes: &[u8]) -> StreamResult<()> {
        let mut state = self.output();
        state.check_open(self)?;
        match &mut *state {
            WriteState::Ready { permit } if bytes.len() <= *permit => *permit = 0,
            _ => return Err(StreamError::trap("write of more bytes than check-write allowed")),
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let rest = match self.stream.try_write(bytes) {
            Ok(n) if n == bytes.len() => {
                self.touch();
                METRICS.sent_bytes.inc_by(n as u64);
                return Ok(());
            }
            Ok(n) => {
                self.touch();
                METRICS.sent_bytes.inc_by(n as u64);
                &bytes[n..]
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => bytes,
            Err(e) => {
                // The spec: after a failure the stream is closed.
                *state = WriteState::Closed;
                self.failed();
                return Err(failure(e));
            }
        };
        *state = WriteState::Sending(self.send_in_background(Bytes::copy_from_slice(rest)));
        Ok(())
    }

    /// Bytes go to the system as they are written: a flush has nothing to
    /// hurry, only an error to report.
    pub(super) fn flush_now(&self) -> StreamResult<()> {
        self.output().check_open(self)
    }
}

impl Connection {
    /// The connection's socket (for the system calls the streams make).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// shutdown(receive), or closed for idleness: reads report `closed`.
    pub(super) fn read_is_shut(&self) -> bool {
        self.read_shut.load(SeqCst)
    }

    /// Returns once the stream takes more bytes (a background send, if
    /// any, is done), or can never (it failed, or was shut).
    pub(super) async fn writable(&self) {
        std::future::poll_fn(|cx| self.output().poll_sent(cx)).await;
        let open = matches!(*self.output(), WriteState::Ready { .. });
        if open && !self.write_shut.load(SeqCst) {
            let _ = self.stream.writable().await;
        }
    }
}

fn noop_context() -> Context<'static> {
    Context::from_waker(std::task::Waker::noop())
}

/// A broken pipe means the peer is gone: the stream is simply closed. Any
/// other failure is reported with the system's words (`network-error-code`
/// turns it back into an error code).
fn failure(e: std::io::Error) -> StreamError {
    match e.kind() {
        ErrorKind::BrokenPipe => StreamError::Closed,
        _ => StreamError::LastOperationFailed(e.into()),
    }
}
