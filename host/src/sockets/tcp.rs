//! A guest's `tcp-socket`, and the states the spec gives it: unbound,
//! bound, listening, connecting, connected, closed, with at most one
//! `start-X` waiting for its `finish-X`.
//!
//! Calling a method in the wrong state returns `invalid-state` and changes
//! nothing; a `finish-X` without its `start-X` returns `not-in-progress`;
//! a `start-X` while another operation waits for its finish returns
//! `concurrency-conflict`. Binding, listening and connecting all happen in
//! `start-X`; `finish-X` reports the result (connect may take a while, so
//! its finish says `would-block` until the connection is made).

use super::addr::{check_local, check_remote, unspecified};
use super::cap::{Asker, Place};
use super::connection::{Connection, Held};
use super::listeners::{new_socket, Lease, Listener};
use super::options::{self, Chosen, Opt};
use super::streams::{Reader, Writer};
use super::{spare, ErrorCode, SocketsCtx};
use crate::metrics::{self, TurnedAway};
use socket2::{SockAddr, SockRef, Socket};
use std::net::{Shutdown, SocketAddr};
use std::task::{ready, Context, Poll};
use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;
use wasmtime_wasi::p2::Pollable;
use wasmtime_wasi::sockets::SocketAddrUse;

/// std's listen backlog, which wasmtime uses too.
const DEFAULT_BACKLOG: u32 = 128;

/// Clients one `accept` call turns away (not granted, over the cap, no
/// descriptor left) before it answers `would-block`: under a flood, the
/// guest gets its turn back, and the poll that follows finds the rest.
const TURNED_AWAY_PER_ACCEPT: usize = 16;

pub struct TcpSocket {
    family: IpAddressFamily,
    state: State,
    /// The operation started and not yet finished.
    pending: Option<Op>,
    backlog: u32,
    /// The options the guest set, for the clients it accepts from a kept
    /// listener (and, where the system does not copy a listener's options
    /// to its clients, from its own).
    chosen: Chosen,
    /// Its place under the socket cap, while it has a descriptor of its
    /// own; a connection's is the connection's (`connection.rs`).
    place: Option<Place>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Bind,
    Listen,
    Connect,
}

enum State {
    /// A socket of its own, not bound yet.
    Unbound(Socket),
    /// Bound to an address of its own.
    Bound(Socket),
    /// Bound to an address whose listener the host keeps, lent to it. Its
    /// own socket stays unbound: it carries the options the guest sets
    /// (`listeners.rs`), and serves the rare guest that connects from it.
    BoundKept {
        lease: Lease,
        own: Socket,
        asked: SocketAddr,
    },
    /// Listening on its own listener (`mirror: None`), or on a kept one,
    /// with the guest's options on its own socket (`mirror`), for the
    /// clients it accepts.
    Listening {
        lease: Lease,
        mirror: Option<Socket>,
    },
    /// Connecting, or connected: `pending == Some(Connect)` until
    /// finish-connect has seen the connection made.
    Connecting(Held),
    Connected(Held),
    /// After a failed connect or listen: only dropping it is left.
    Closed,
}

/// What accept() hands the guest.
pub type Accepted = (TcpSocket, Reader, Writer);

impl TcpSocket {
    /// socket(): a fresh socket of this family, holding `place`.
    pub fn new(family: IpAddressFamily, place: Place) -> Result<TcpSocket, ErrorCode> {
        let any = unspecified(family);
        Ok(TcpSocket::with_state(family, State::Unbound(new_socket(any)?), Some(place)))
    }

    fn with_state(family: IpAddressFamily, state: State, place: Option<Place>) -> TcpSocket {
        TcpSocket {
            family,
            state,
            pending: None,
            backlog: DEFAULT_BACKLOG,
            chosen: Chosen::default(),
            place,
        }
    }

    pub fn family(&self) -> IpAddressFamily {
        self.family
    }

    /// `concurrency-conflict` while another operation waits for its finish.
    fn no_pending(&self) -> Result<(), ErrorCode> {
        match self.pending {
            Some(_) => Err(ErrorCode::ConcurrencyConflict),
            None => Ok(()),
        }
    }

    /// finish-X: `not-in-progress` unless start-X came first.
    pub fn finish(&mut self, op: Op) -> Result<(), ErrorCode> {
        if self.pending != Some(op) {
            return Err(ErrorCode::NotInProgress);
        }
        self.pending = None;
        Ok(())
    }

    /// start-bind: checks, the grant, then the bind itself, so that
    /// finish-bind only reports.
    pub fn start_bind(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), ErrorCode> {
        self.no_pending()?;
        let State::Unbound(own) = &self.state else { return Err(ErrorCode::InvalidState) };
        check_local(addr, self.family)?;
        if !ctx.allowed(addr, SocketAddrUse::TcpBind) {
            return Err(ErrorCode::AccessDenied);
        }
        let bound = match ctx.listeners.lend(addr, ctx.tenant.id) {
            Some(lease) => Binding::Kept(lease?),
            None => {
                own.bind(&SockAddr::from(addr))?;
                Binding::Own
            }
        };
        let State::Unbound(own) = std::mem::replace(&mut self.state, State::Closed) else {
            unreachable!("checked above")
        };
        self.state = match bound {
            Binding::Kept(lease) => State::BoundKept { lease, own, asked: addr },
            Binding::Own => State::Bound(own),
        };
        ctx.done(addr, SocketAddrUse::TcpBind);
        self.pending = Some(Op::Bind);
        Ok(())
    }

    /// start-listen: the socket must be bound (WASI 0.2 has no implicit
    /// bind here). A failure closes the socket.
    pub fn start_listen(&mut self, ctx: &SocketsCtx) -> Result<(), ErrorCode> {
        self.no_pending()?;
        if !matches!(self.state, State::Bound(_) | State::BoundKept { .. }) {
            return Err(ErrorCode::InvalidState);
        }
        let local = self.local_address()?;
        let result = match std::mem::replace(&mut self.state, State::Closed) {
            _ if !ctx.allowed(local, SocketAddrUse::TcpListen) => Err(ErrorCode::AccessDenied),
            State::BoundKept { lease, own, .. } => {
                lease.listen(self.backlog).map(|()| (lease, Some(own)))
            }
            State::Bound(own) => {
                let lease = Lease::own(Listener::new(own)?);
                lease.listen(self.backlog).map(|()| (lease, None))
            }
            _ => unreachable!("checked above"),
        };
        let (lease, mirror) = result?;
        if lease.kept_address().is_some() {
            ctx.tenant.listened();
        }
        ctx.done(local, SocketAddrUse::TcpListen);
        self.state = State::Listening { lease, mirror };
        self.pending = Some(Op::Listen);
        Ok(())
    }

    /// start-connect: checks, the grants (an unbound socket is bound
    /// implicitly, so that is checked too), then a non-blocking connect.
    /// Wrong arguments change nothing; any later failure closes the socket.
    pub fn start_connect(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), ErrorCode> {
        self.no_pending()?;
        if !matches!(self.state, State::Unbound(_) | State::Bound(_) | State::BoundKept { .. }) {
            return Err(ErrorCode::InvalidState);
        }
        check_remote(addr, self.family)?;
        let state = std::mem::replace(&mut self.state, State::Closed);
        let allowed = match state {
            State::Unbound(_) => ctx.allowed(unspecified(self.family), SocketAddrUse::TcpBind),
            _ => true,
        } && ctx.allowed(addr, SocketAddrUse::TcpConnect);
        if !allowed {
            return Err(ErrorCode::AccessDenied);
        }
        let socket = match state {
            State::Unbound(own) | State::Bound(own) => own,
            // Connecting from the address of a kept listener: the lease
            // goes back, and the connection needs that address for a
            // socket of its own, which the system refuses while the host's
            // listener holds it (address-in-use), as it would a second
            // socket bound where a listener is.
            State::BoundKept { lease, own, asked } => {
                drop(lease);
                own.bind(&SockAddr::from(asked))?;
                own
            }
            _ => unreachable!("checked above"),
        };
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if connect_in_progress(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let stream = tokio::net::TcpStream::from_std(socket.into())?;
        ctx.done(addr, SocketAddrUse::TcpConnect);
        let place = self.place.take().ok_or(ErrorCode::InvalidState)?;
        let conn = Connection::new(stream, None, ctx.owner(place, None));
        self.state = State::Connecting(Held::new(&conn));
        self.pending = Some(Op::Connect);
        Ok(())
    }

    /// finish-connect: `would-block` until the connection is made; then
    /// its two streams.
    pub fn finish_connect(&mut self, ctx: &SocketsCtx) -> Result<(Reader, Writer), ErrorCode> {
        if self.pending != Some(Op::Connect) {
            return Err(ErrorCode::NotInProgress);
        }
        let State::Connecting(conn) = &self.state else { return Err(ErrorCode::InvalidState) };
        let mut noop = Context::from_waker(std::task::Waker::noop());
        if conn.stream.poll_write_ready(&mut noop).is_pending() {
            return Err(ErrorCode::WouldBlock);
        }
        self.pending = None;
        let failed = match conn.stream.take_error() {
            Ok(None) => conn.stream.peer_addr().err(),
            Ok(Some(e)) | Err(e) => Some(e),
        };
        let State::Connecting(conn) = std::mem::replace(&mut self.state, State::Closed) else {
            unreachable!("matched above")
        };
        if let Some(e) = failed {
            return Err(e.into());
        }
        let streams = (Reader::new(&conn, ctx.tracer), Writer::new(&conn, ctx.tracer));
        self.state = State::Connected(conn);
        Ok(streams)
    }

    /// accept(): the next client the grants let in, with a place under the
    /// socket cap; others are reset before the guest sees them, at most
    /// [`TURNED_AWAY_PER_ACCEPT`] in one call.
    pub fn accept(&mut self, ctx: &SocketsCtx) -> Result<Accepted, ErrorCode> {
        let State::Listening { lease, .. } = &self.state else {
            return Err(ErrorCode::InvalidState);
        };
        if self.pending == Some(Op::Listen) {
            return Err(ErrorCode::InvalidState);
        }
        // Not this instance's turn: a newer one has taken the listener
        // over, or the host offers no more clients. They are not its own.
        if !lease.is_current() {
            return Err(ErrorCode::WouldBlock);
        }
        for _ in 0..TURNED_AWAY_PER_ACCEPT {
            let Some((client, peer)) = next_client(&lease.listener)? else { continue };
            let place = match ctx.grants.check(peer, SocketAddrUse::TcpAccept) {
                true => ctx.cap.take(Asker::Client(peer)),
                false => {
                    crate::audit::log(&ctx.grants, peer, SocketAddrUse::TcpAccept, false);
                    metrics::turned_away(TurnedAway::NotAllowed);
                    None
                }
            };
            match place {
                Some(place) => {
                    return self.accepted(ctx, (client, peer), place, lease.kept_address())
                }
                None => reset(client),
            }
        }
        Err(ErrorCode::WouldBlock)
    }

    /// The guest's side of a client let in: a socket and its two streams.
    fn accepted(
        &self,
        ctx: &SocketsCtx,
        (client, peer): (Socket, SocketAddr),
        place: Place,
        kept: Option<usize>,
    ) -> Result<Accepted, ErrorCode> {
        ctx.done(peer, SocketAddrUse::TcpAccept);
        // A kept listener has the host's options, never the guest's: the
        // ones this guest chose are set on each client it accepts. Linux
        // gives a client of the guest's own listener that listener's
        // options; macOS and Windows not all of them (macOS drops the
        // keep-alive times), so there they are set again too.
        if kept.is_some() || cfg!(not(target_os = "linux")) {
            self.chosen.apply(SockRef::from(&client), self.family)?;
        }
        if ctx.nodelay {
            client.set_tcp_nodelay(true)?;
        }
        let stream = tokio::net::TcpStream::from_std(client.into())?;
        let conn = Connection::new(stream, Some(peer), ctx.owner(place, Some(ctx.tenant.client())));
        let (reader, writer) = (Reader::new(&conn, ctx.tracer), Writer::new(&conn, ctx.tracer));
        let socket = TcpSocket::with_state(self.family, State::Connected(Held::new(&conn)), None);
        Ok((socket, reader, writer))
    }

    /// getsockname(): only once bound (bind-in-progress is not yet).
    pub fn local_address(&self) -> Result<SocketAddr, ErrorCode> {
        if self.pending == Some(Op::Bind) {
            return Err(ErrorCode::InvalidState);
        }
        let local = match &self.state {
            State::Bound(own) => own.local_addr()?,
            State::BoundKept { lease, .. } | State::Listening { lease, .. } => {
                return Ok(lease.listener.local_addr())
            }
            State::Connecting(conn) | State::Connected(conn) => {
                return Ok(conn.stream.local_addr()?)
            }
            State::Unbound(_) | State::Closed => return Err(ErrorCode::InvalidState),
        };
        local.as_socket().ok_or(ErrorCode::InvalidState)
    }

    /// getpeername(): only once connected.
    pub fn remote_address(&self) -> Result<SocketAddr, ErrorCode> {
        match &self.state {
            State::Connected(conn) => Ok(conn.stream.peer_addr()?),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    pub fn is_listening(&self) -> bool {
        matches!(self.state, State::Listening { .. }) && self.pending != Some(Op::Listen)
    }

    /// listen(s, backlog)'s second argument: before listen it is kept for
    /// it; after, the listener is asked to change (Linux allows it), a kept
    /// one while this instance is offered its clients (`listeners.rs`).
    pub fn set_listen_backlog_size(&mut self, value: u64) -> Result<(), ErrorCode> {
        if value == 0 {
            return Err(ErrorCode::InvalidArgument);
        }
        let value = u32::try_from(value).unwrap_or(u32::MAX).min(i32::MAX as u32);
        match &self.state {
            State::Unbound(_) | State::Bound(_) | State::BoundKept { .. } => {}
            State::Listening { lease, .. } => lease.set_backlog(value)?,
            State::Connecting(_) | State::Connected(_) | State::Closed => {
                return Err(ErrorCode::InvalidState)
            }
        }
        self.backlog = value;
        Ok(())
    }

    /// The descriptor options apply to: the socket's own, or, on a kept
    /// listener (the host's), the guest's mirror of it.
    fn option_target(&self) -> Result<SockRef<'_>, ErrorCode> {
        Ok(match &self.state {
            State::Unbound(own) | State::Bound(own) => SockRef::from(own),
            State::BoundKept { own, .. } | State::Listening { mirror: Some(own), .. } => {
                SockRef::from(own)
            }
            State::Listening { lease, mirror: None } => SockRef::from(lease.listener.socket()),
            State::Connecting(conn) | State::Connected(conn) => SockRef::from(&conn.stream),
            State::Closed => return Err(ErrorCode::InvalidState),
        })
    }

    pub fn option(&self, opt: Opt) -> Result<u64, ErrorCode> {
        options::get(self.option_target()?, self.family, opt)
    }

    pub fn set_option(&mut self, opt: Opt, value: u64) -> Result<(), ErrorCode> {
        options::set(self.option_target()?, self.family, opt, value)?;
        self.chosen.record(opt, value);
        Ok(())
    }

    /// shutdown(): ends one or both directions of a connection; the socket
    /// itself stays until it is dropped.
    pub fn shutdown(&self, how: Shutdown) -> Result<(), ErrorCode> {
        let State::Connected(conn) = &self.state else { return Err(ErrorCode::InvalidState) };
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            conn.shut_read();
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            conn.shut_write();
        }
        Ok(())
    }

    /// closesocket() on a listener the host keeps, on its turn: as closing
    /// a listener does, the clients waiting in its backlog are reset (a
    /// guest that crashes instead leaves them for the next instance).
    /// Clients waiting while it is not its turn are another instance's,
    /// and left alone. Returns the address and how many were reset.
    pub fn close_kept_listener(&self) -> Option<(SocketAddr, usize)> {
        match &self.state {
            State::Listening { lease, .. }
                if lease.kept_address().is_some() && lease.is_current() =>
            {
                Some((lease.listener.local_addr(), lease.listener.reset_waiting()))
            }
            _ => None,
        }
    }

    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match (&self.state, self.pending) {
            (State::Connecting(conn), Some(Op::Connect)) => {
                conn.stream.poll_write_ready(cx).map(|_| ())
            }
            // A client waiting, on this instance's turn; until its turn
            // comes (the newer instance it lent the listener to failed,
            // say), woken by the turn, never by the listener itself.
            (State::Listening { lease, .. }, None) => {
                ready!(lease.poll_turn(cx));
                lease.listener.poll_ready(cx)
            }
            _ => Poll::Ready(()),
        }
    }
}

enum Binding {
    Own,
    Kept(Lease),
}

/// The spec's readiness: a connect finished, a client waiting, or (in
/// every other state) at once.
#[async_trait::async_trait]
impl Pollable for TcpSocket {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

/// The next client waiting, if any (`would-block` if none); None for one
/// turned away because the process has no descriptor left for it.
fn next_client(listener: &Listener) -> Result<Option<(Socket, SocketAddr)>, ErrorCode> {
    let mut noop = Context::from_waker(std::task::Waker::noop());
    match listener.poll_accept(&mut noop) {
        Poll::Pending => Err(ErrorCode::WouldBlock),
        Poll::Ready(Ok(accepted)) => Ok(Some(accepted)),
        Poll::Ready(Err(e)) if spare::out_of_descriptors(&e) => {
            match spare::turn_away_one(listener.socket()) {
                true => Ok(None),
                false => {
                    listener.forget_readiness();
                    Err(ErrorCode::NewSocketLimit)
                }
            }
        }
        Poll::Ready(Err(e)) => Err(accept_error(e)),
    }
}

/// A non-blocking connect under way: EINPROGRESS on Unix, WSAEWOULDBLOCK
/// on Windows.
fn connect_in_progress(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EINPROGRESS);
    #[cfg(windows)]
    return e.kind() == std::io::ErrorKind::WouldBlock;
}

/// Linux reports a client that failed before it was accepted with that
/// client's own error; wasi:sockets calls all of those `connection-aborted`.
#[cfg(target_os = "linux")]
fn accept_error(e: std::io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(
            libc::ECONNRESET
            | libc::ENETRESET
            | libc::EHOSTUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENONET
            | libc::EOPNOTSUPP,
        ) => ErrorCode::ConnectionAborted,
        _ => e.into(),
    }
}

/// Elsewhere (the BSDs' ECONNABORTED, WinSock's WSAECONNRESET), by kind.
#[cfg(not(target_os = "linux"))]
fn accept_error(e: std::io::Error) -> ErrorCode {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | NetworkDown | NetworkUnreachable
        | HostUnreachable => ErrorCode::ConnectionAborted,
        _ => e.into(),
    }
}

/// Turns a client away with a reset (SO_LINGER 0), not a polite close.
fn reset(client: Socket) {
    let _ = client.set_linger(Some(std::time::Duration::ZERO));
}
