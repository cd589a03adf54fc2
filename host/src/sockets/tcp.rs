//! A guest's `tcp-socket`, and the states the spec gives it: unbound,
//! bind started, bound, listen started, listening, connecting, connected,
//! closed. One enum ([`State`]) holds where a socket is and what it owns
//! there; each transition is one method.
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
    /// Where it is in the spec's state machine, and what it owns there.
    state: State,
    backlog: u32,
    /// The options the guest set, for the clients it accepts from a kept
    /// listener (and, where the system does not copy a listener's options
    /// to its clients, from its own).
    chosen: Chosen,
}

/// The operations a `start-X` begins and its `finish-X` completes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Bind,
    Listen,
    Connect,
}

/// A socket's state: the spec's, each with what the socket owns in it. A
/// descriptor of the socket's own holds its place under the socket cap
/// (`place`); a connection's place is the connection's (`connection.rs`).
/// Every transition is a method of [`TcpSocket`] below.
enum State {
    /// A socket of its own, not bound yet.
    Unbound {
        own: Socket,
        place: Place,
    },
    /// start-bind has bound it; finish-bind will say so.
    BindStarted(Bound),
    Bound(Bound),
    /// start-listen has made it listen; finish-listen will say so.
    ListenStarted(Listening),
    Listening(Listening),
    /// start-connect has begun the connection; finish-connect answers
    /// `would-block` until it is made.
    Connecting(Held),
    Connected(Held),
    /// After a failed bind, listen or connect: only dropping it is left.
    Closed,
}

/// A bound socket.
enum Bound {
    /// Bound to an address of its own.
    Own { own: Socket, place: Place },
    /// Bound to an address whose listener the host keeps, lent to it. Its
    /// own socket stays unbound: it carries the options the guest sets
    /// (`listeners.rs`), and serves the rare guest that connects from it.
    Kept { lease: Lease, own: Socket, asked: SocketAddr, place: Place },
}

/// A listening socket: on its own listener (`mirror: None`), or on a kept
/// one, with the guest's options on its own socket (`mirror`), for the
/// clients it accepts.
struct Listening {
    lease: Lease,
    mirror: Option<Socket>,
    _place: Place,
}

/// What accept() hands the guest.
pub type Accepted = (TcpSocket, Reader, Writer);

impl TcpSocket {
    /// socket(): a fresh socket of this family, with a place under the
    /// socket cap (`new-socket-limit` at the cap).
    pub fn create(ctx: &SocketsCtx, family: IpAddressFamily) -> Result<TcpSocket, ErrorCode> {
        let place = ctx.cap.take(Asker::TcpSocket).ok_or(ErrorCode::NewSocketLimit)?;
        let own = new_socket(unspecified(family))?;
        Ok(TcpSocket::with_state(family, State::Unbound { own, place }))
    }

    fn with_state(family: IpAddressFamily, state: State) -> TcpSocket {
        TcpSocket { family, state, backlog: DEFAULT_BACKLOG, chosen: Chosen::default() }
    }

    pub fn family(&self) -> IpAddressFamily {
        self.family
    }

    /// The operation started and not yet finished, if any.
    fn in_progress(&self) -> Option<Op> {
        match self.state {
            State::BindStarted(_) => Some(Op::Bind),
            State::ListenStarted(_) => Some(Op::Listen),
            State::Connecting(_) => Some(Op::Connect),
            _ => None,
        }
    }

    /// `concurrency-conflict` while another operation waits for its finish.
    fn no_pending(&self) -> Result<(), ErrorCode> {
        match self.in_progress() {
            Some(_) => Err(ErrorCode::ConcurrencyConflict),
            None => Ok(()),
        }
    }

    /// Takes the state, leaving `Closed`: a transition puts the next one back.
    fn take(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Closed)
    }

    /// finish-bind, finish-listen: `not-in-progress` unless its start-X
    /// came first.
    pub fn finish(&mut self, op: Op) -> Result<(), ErrorCode> {
        if self.in_progress() != Some(op) || op == Op::Connect {
            return Err(ErrorCode::NotInProgress);
        }
        self.state = match self.take() {
            State::BindStarted(bound) => State::Bound(bound),
            State::ListenStarted(listening) => State::Listening(listening),
            _ => unreachable!("in progress: checked above"),
        };
        Ok(())
    }

    /// start-bind: checks, the grant, then the bind itself, so that
    /// finish-bind only reports. Wrong arguments or a refusal change nothing.
    pub fn start_bind(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), ErrorCode> {
        self.no_pending()?;
        let State::Unbound { own, .. } = &self.state else { return Err(ErrorCode::InvalidState) };
        check_local(addr, self.family)?;
        if !ctx.allowed(addr, SocketAddrUse::TcpBind) {
            return Err(ErrorCode::AccessDenied);
        }
        let lease = match ctx.listeners.lend(addr, ctx.tenant.id) {
            Some(lease) => Some(lease?),
            None => {
                own.bind(&SockAddr::from(addr))?;
                None
            }
        };
        let State::Unbound { own, place } = self.take() else { unreachable!("checked above") };
        self.state = State::BindStarted(match lease {
            Some(lease) => Bound::Kept { lease, own, asked: addr, place },
            None => Bound::Own { own, place },
        });
        ctx.done(addr, SocketAddrUse::TcpBind);
        Ok(())
    }

    /// start-listen: the socket must be bound (WASI 0.2 has no implicit
    /// bind here). A refusal or a failure closes the socket.
    pub fn start_listen(&mut self, ctx: &SocketsCtx) -> Result<(), ErrorCode> {
        self.no_pending()?;
        let State::Bound(_) = &self.state else { return Err(ErrorCode::InvalidState) };
        let local = self.local_address()?;
        let State::Bound(bound) = self.take() else { unreachable!("checked above") };
        if !ctx.allowed(local, SocketAddrUse::TcpListen) {
            return Err(ErrorCode::AccessDenied);
        }
        let listening = match bound {
            Bound::Kept { lease, own, place, .. } => {
                lease.listen(self.backlog)?;
                ctx.tenant.listened();
                Listening { lease, mirror: Some(own), _place: place }
            }
            Bound::Own { own, place } => {
                let lease = Lease::own(Listener::new(own)?);
                lease.listen(self.backlog)?;
                Listening { lease, mirror: None, _place: place }
            }
        };
        ctx.done(local, SocketAddrUse::TcpListen);
        self.state = State::ListenStarted(listening);
        Ok(())
    }

    /// start-connect: checks, the grants (an unbound socket is bound
    /// implicitly, so that is checked too), then a non-blocking connect.
    /// Wrong arguments change nothing; a refusal or any later failure
    /// closes the socket.
    pub fn start_connect(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), ErrorCode> {
        self.no_pending()?;
        if !matches!(self.state, State::Unbound { .. } | State::Bound(_)) {
            return Err(ErrorCode::InvalidState);
        }
        check_remote(addr, self.family)?;
        let state = self.take();
        let allowed = match state {
            State::Unbound { .. } => ctx.allowed(unspecified(self.family), SocketAddrUse::TcpBind),
            _ => true,
        } && ctx.allowed(addr, SocketAddrUse::TcpConnect);
        if !allowed {
            return Err(ErrorCode::AccessDenied);
        }
        let (socket, place) = match state {
            State::Unbound { own, place } | State::Bound(Bound::Own { own, place }) => (own, place),
            // Connecting from the address of a kept listener: the lease
            // goes back, and the connection needs that address for a
            // socket of its own, which the system refuses while the host's
            // listener holds it (address-in-use), as it would a second
            // socket bound where a listener is.
            State::Bound(Bound::Kept { lease, own, asked, place }) => {
                drop(lease);
                own.bind(&SockAddr::from(asked))?;
                (own, place)
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
        let conn = Connection::new(stream, None, ctx.owner(place, None));
        self.state = State::Connecting(Held::new(&conn));
        Ok(())
    }

    /// finish-connect: `would-block` until the connection is made; then
    /// its two streams. A connection that failed closes the socket.
    pub fn finish_connect(&mut self, ctx: &SocketsCtx) -> Result<(Reader, Writer), ErrorCode> {
        let State::Connecting(conn) = &self.state else { return Err(ErrorCode::NotInProgress) };
        let mut noop = Context::from_waker(std::task::Waker::noop());
        if conn.stream().poll_write_ready(&mut noop).is_pending() {
            return Err(ErrorCode::WouldBlock);
        }
        let failed = match conn.stream().take_error() {
            Ok(None) => conn.stream().peer_addr().err(),
            Ok(Some(e)) | Err(e) => Some(e),
        };
        let State::Connecting(conn) = self.take() else { unreachable!("matched above") };
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
        let State::Listening(Listening { lease, .. }) = &self.state else {
            return Err(ErrorCode::InvalidState);
        };
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
        let socket = TcpSocket::with_state(self.family, State::Connected(Held::new(&conn)));
        Ok((socket, reader, writer))
    }

    /// getsockname(): only once bound (bind-in-progress is not yet).
    pub fn local_address(&self) -> Result<SocketAddr, ErrorCode> {
        let local = match &self.state {
            State::Bound(Bound::Own { own, .. }) => own.local_addr()?,
            State::Bound(Bound::Kept { lease, .. })
            | State::ListenStarted(Listening { lease, .. })
            | State::Listening(Listening { lease, .. }) => return Ok(lease.listener.local_addr()),
            State::Connecting(conn) | State::Connected(conn) => {
                return Ok(conn.stream().local_addr()?)
            }
            State::Unbound { .. } | State::BindStarted(_) | State::Closed => {
                return Err(ErrorCode::InvalidState)
            }
        };
        local.as_socket().ok_or(ErrorCode::InvalidState)
    }

    /// getpeername(): only once connected.
    pub fn remote_address(&self) -> Result<SocketAddr, ErrorCode> {
        match &self.state {
            State::Connected(conn) => Ok(conn.stream().peer_addr()?),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    pub fn is_listening(&self) -> bool {
        matches!(self.state, State::Listening(_))
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
            State::Unbound { .. } | State::BindStarted(_) | State::Bound(_) => {}
            State::ListenStarted(Listening { lease, .. })
            | State::Listening(Listening { lease, .. }) => lease.set_backlog(value)?,
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
            State::Unbound { own, .. }
            | State::BindStarted(Bound::Own { own, .. } | Bound::Kept { own, .. })
            | State::Bound(Bound::Own { own, .. } | Bound::Kept { own, .. })
            | State::ListenStarted(Listening { mirror: Some(own), .. })
            | State::Listening(Listening { mirror: Some(own), .. }) => SockRef::from(own),
            State::ListenStarted(Listening { lease, mirror: None, .. })
            | State::Listening(Listening { lease, mirror: None, .. }) => {
                SockRef::from(lease.listener.socket())
            }
            State::Connecting(conn) | State::Connected(conn) => SockRef::from(conn.stream()),
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
            State::ListenStarted(Listening { lease, .. })
            | State::Listening(Listening { lease, .. })
                if lease.kept_address().is_some() && lease.is_current() =>
            {
                Some((lease.listener.local_addr(), lease.listener.reset_waiting()))
            }
            _ => None,
        }
    }

    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.state {
            State::Connecting(conn) => conn.stream().poll_write_ready(cx).map(|_| ()),
            // A client waiting, on this instance's turn; until its turn
            // comes (the newer instance it lent the listener to failed,
            // say), woken by the turn, never by the listener itself.
            State::Listening(Listening { lease, .. }) => {
                ready!(lease.poll_turn(cx));
                lease.listener.poll_ready(cx)
            }
            _ => Poll::Ready(()),
        }
    }
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

#[cfg(test)]
mod tests {
    //! Every transition of a socket's state machine, and every error code
    //! the WIT allows on the way, without a guest: the socket driven
    //! directly, on loopback, in a runtime of the test's own.

    use super::*;
    use crate::policy::{Grants, NetRule};
    use crate::sockets::{Cap, Listeners, Options, Tenant, Timeouts};
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;
    use ErrorCode::*;

    const V4: IpAddressFamily = IpAddressFamily::Ipv4;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A sockets context for one instance, with these grants and a cap.
    fn ctx(grants: Grants, cap: usize) -> SocketsCtx {
        let listeners = Listeners::open(&grants.listen, Vec::new()).unwrap();
        let timeouts = Timeouts { send: Duration::from_secs(30), idle: None };
        let options = Options { nodelay: true, tracer: None, timeouts };
        SocketsCtx::new(Arc::new(grants), listeners, Tenant::new(1), Cap::sockets(cap), options)
    }

    fn listen_on(grant: &str) -> Grants {
        Grants { listen: vec![addr(grant)], ..Grants::default() }
    }

    /// Runs `test` in a runtime of its own (the sockets need its reactor).
    fn run(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test);
    }

    fn error<T>(result: Result<T, ErrorCode>) -> ErrorCode {
        match result {
            Ok(_) => panic!("it succeeded"),
            Err(e) => e,
        }
    }

    #[test]
    fn bind_listen_accept_and_every_call_in_the_wrong_state() {
        run(async {
            let ctx = ctx(listen_on("127.0.0.1:0"), 8);
            let mut socket = TcpSocket::create(&ctx, V4).unwrap();
            // Unbound.
            assert_eq!(error(socket.local_address()), InvalidState);
            assert_eq!(error(socket.remote_address()), InvalidState);
            assert_eq!(error(socket.finish(Op::Bind)), NotInProgress);
            assert_eq!(error(socket.start_listen(&ctx)), InvalidState);
            assert_eq!(error(socket.accept(&ctx)), InvalidState);
            assert_eq!(error(socket.shutdown(Shutdown::Both)), InvalidState);
            assert_eq!(error(socket.finish_connect(&ctx)), NotInProgress);
            // Bind started.
            socket.start_bind(&ctx, addr("127.0.0.1:0")).unwrap();
            assert_eq!(socket.in_progress(), Some(Op::Bind));
            assert_eq!(error(socket.local_address()), InvalidState, "not bound until finished");
            assert_eq!(error(socket.start_bind(&ctx, addr("127.0.0.1:0"))), ConcurrencyConflict);
            assert_eq!(error(socket.start_listen(&ctx)), ConcurrencyConflict);
            assert_eq!(error(socket.start_connect(&ctx, addr("127.0.0.1:9"))), ConcurrencyConflict);
            assert_eq!(error(socket.finish(Op::Listen)), NotInProgress);
            // Bound.
            socket.finish(Op::Bind).unwrap();
            let local = socket.local_address().unwrap();
            assert_ne!(local.port(), 0, "the port the system picked");
            assert_eq!(error(socket.start_bind(&ctx, addr("127.0.0.1:0"))), InvalidState);
            assert_eq!(error(socket.finish(Op::Bind)), NotInProgress);
            assert_eq!(error(socket.accept(&ctx)), InvalidState);
            // Listen started.
            socket.start_listen(&ctx).unwrap();
            assert!(!socket.is_listening());
            assert_eq!(error(socket.accept(&ctx)), InvalidState);
            assert_eq!(error(socket.start_listen(&ctx)), ConcurrencyConflict);
            // Listening.
            socket.finish(Op::Listen).unwrap();
            assert!(socket.is_listening());
            assert_eq!(error(socket.accept(&ctx)), WouldBlock, "no client yet");
            assert_eq!(error(socket.start_listen(&ctx)), InvalidState);
            assert_eq!(error(socket.start_connect(&ctx, addr("127.0.0.1:9"))), InvalidState);
            socket.set_listen_backlog_size(16).unwrap();
            let _client = std::net::TcpStream::connect(local).unwrap();
            poll_fn(|cx| socket.poll_ready(cx)).await;
            let (mut accepted, _input, _output) = socket.accept(&ctx).unwrap();
            // Connected.
            assert_eq!(accepted.remote_address().unwrap(), _client.local_addr().unwrap());
            assert_eq!(error(accepted.start_bind(&ctx, addr("127.0.0.1:0"))), InvalidState);
            assert_eq!(error(accepted.start_listen(&ctx)), InvalidState);
            assert_eq!(error(accepted.set_listen_backlog_size(8)), InvalidState);
            assert_eq!(error(accepted.finish_connect(&ctx)), NotInProgress);
            accepted.shutdown(Shutdown::Write).unwrap();
        });
    }

    #[test]
    fn connect_goes_from_connecting_to_connected_or_closed() {
        run(async {
            let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let there = server.local_addr().unwrap();
            let rule: NetRule = format!("127.0.0.1:{}", there.port()).parse().unwrap();
            let ctx = ctx(Grants { connect: vec![rule], ..Grants::default() }, 8);
            let mut socket = TcpSocket::create(&ctx, V4).unwrap();
            socket.start_connect(&ctx, there).unwrap();
            assert_eq!(socket.in_progress(), Some(Op::Connect));
            assert_eq!(error(socket.start_connect(&ctx, there)), ConcurrencyConflict);
            assert_eq!(error(socket.start_bind(&ctx, addr("127.0.0.1:0"))), ConcurrencyConflict);
            poll_fn(|cx| socket.poll_ready(cx)).await;
            let _streams = socket.finish_connect(&ctx).unwrap();
            assert_eq!(socket.remote_address().unwrap(), there);
            assert_eq!(error(socket.finish_connect(&ctx)), NotInProgress);
            assert_eq!(error(socket.start_connect(&ctx, there)), InvalidState);

            // Nobody listens there any more: refused, and the socket closed.
            drop(server);
            let mut refused = TcpSocket::create(&ctx, V4).unwrap();
            refused.start_connect(&ctx, there).unwrap();
            poll_fn(|cx| refused.poll_ready(cx)).await;
            assert_eq!(error(refused.finish_connect(&ctx)), ConnectionRefused);
            assert_eq!(error(refused.local_address()), InvalidState, "closed");
            assert_eq!(error(refused.start_connect(&ctx, there)), InvalidState);
        });
    }

    /// A port the system picked, held (bound with SO_REUSEADDR, never
    /// listening) so that nothing else takes it while the host binds it too.
    fn reserved_port() -> (Socket, SocketAddr) {
        let holder = new_socket(addr("127.0.0.1:0")).unwrap();
        holder.bind(&SockAddr::from(addr("127.0.0.1:0"))).unwrap();
        let at = holder.local_addr().unwrap().as_socket().unwrap();
        (holder, at)
    }

    #[test]
    fn refusals_and_wrong_arguments_name_their_error_code() {
        run(async {
            let (_holder, granted) = reserved_port();
            let ctx = ctx(listen_on(&granted.to_string()), 2);
            let mut socket = TcpSocket::create(&ctx, V4).unwrap();
            // A refused bind changes nothing: the socket can still bind.
            assert_eq!(error(socket.start_bind(&ctx, addr("127.0.0.2:0"))), AccessDenied);
            assert_eq!(error(socket.start_bind(&ctx, addr("[::1]:0"))), InvalidArgument);
            assert_eq!(error(socket.set_listen_backlog_size(0)), InvalidArgument);
            assert_eq!(error(socket.start_connect(&ctx, addr("127.0.0.1:0"))), InvalidArgument);
            socket.start_bind(&ctx, granted).unwrap();
            socket.finish(Op::Bind).unwrap();
            // The granted address is this instance's already.
            let mut second = TcpSocket::create(&ctx, V4).unwrap();
            assert_eq!(error(second.start_bind(&ctx, granted)), AddressInUse);
            // Two sockets hold the cap's two places.
            assert_eq!(error(TcpSocket::create(&ctx, V4)), NewSocketLimit);
            drop(second);
            // A refused connect closes the socket (after a failed start-X,
            // only dropping it is left), and gives its place back.
            let mut denied = TcpSocket::create(&ctx, V4).unwrap();
            assert_eq!(error(denied.start_connect(&ctx, addr("127.0.0.1:9"))), AccessDenied);
            assert_eq!(error(denied.start_bind(&ctx, addr("127.0.0.1:0"))), InvalidState);
            TcpSocket::create(&ctx, V4).unwrap();
        });
    }

    /// A client that failed before it was accepted: Linux reports it with
    /// its own error; wasi:sockets calls all of those connection-aborted.
    #[test]
    #[cfg(target_os = "linux")]
    fn an_accept_that_failed_is_connection_aborted() {
        for errno in [libc::ECONNRESET, libc::ENETRESET, libc::EHOSTUNREACH, libc::EPROTO] {
            let error = std::io::Error::from_raw_os_error(errno);
            assert_eq!(accept_error(error), ConnectionAborted, "errno {errno}");
        }
    }
}
