//! One listening socket, which a guest can wait on without accepting: the
//! client stays in the backlog until the guest calls accept.
//!
//! Unix registers the socket itself with the async runtime (`AsyncFd`),
//! which says "a client waits" without taking it. Windows' runtime offers
//! no such thing for a listener: there the host asks tokio's `TcpListener`
//! for the next client and keeps it, accepted, until the guest asks for it
//! (one client at most, per listener, held that way).

use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

pub use platform::Listener;

/// The most clients one close of a listener resets: a backlog's worth
/// (Linux caps backlogs at net.core.somaxconn, 4096 by default), so that
/// clients arriving all the while cannot keep the host in the loop.
const MOST_RESET_AT_CLOSE: usize = 4096;

/// A TCP socket as wasi:sockets makes them: non-blocking, IPv6 sockets
/// IPv6-only, and on Unix SO_REUSEADDR, so that connections of an earlier
/// run left in TIME_WAIT do not make the address busy. On Windows,
/// SO_REUSEADDR means something else (another socket may bind the same
/// port and take its clients), so there it is SO_EXCLUSIVEADDRUSE: no
/// other socket may bind the port while this one holds it.
pub fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(windows)]
    platform::set_exclusive_address_use(&socket)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Listener {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket, for its options.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Resets the clients waiting in the backlog, as closing a listener
    /// does; returns how many there were.
    pub fn reset_waiting(&self) -> usize {
        let mut noop = TaskContext::from_waker(std::task::Waker::noop());
        let mut reset = 0;
        while reset < MOST_RESET_AT_CLOSE {
            let Poll::Ready(Ok((client, _))) = self.poll_accept(&mut noop) else { break };
            let _ = client.set_linger(Some(std::time::Duration::ZERO));
            reset += 1;
        }
        reset
    }
}

#[cfg(unix)]
mod platform {
    use super::*;
    use crate::sockets::ErrorCode;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::OnceLock;
    use std::task::ready;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A bound TCP socket that is, or is about to be, listening.
    pub struct Listener {
        /// Registered with the async runtime once listening: a socket that
        /// is not listening yet reports "hung up", which the runtime never
        /// forgets. Declared before `socket`, so that it is deregistered
        /// before the socket closes.
        ready: OnceLock<AsyncFd<RawFd>>,
        pub(super) socket: Socket,
        pub(super) local: SocketAddr,
    }

    impl Listener {
        pub fn new(socket: Socket) -> std::io::Result<Arc<Listener>> {
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?.as_socket().ok_or(std::io::ErrorKind::InvalidInput)?;
            Ok(Arc::new(Listener { ready: OnceLock::new(), socket, local }))
        }

        /// listen(): the first call starts listening; a later one (a new
        /// guest instance) only asks for its own backlog, which Linux allows.
        pub fn listen(&self, backlog: u32) -> Result<(), ErrorCode> {
            let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
            if self.ready.get().is_some() {
                let _ = self.socket.listen(backlog);
                return Ok(());
            }
            self.socket.listen(backlog)?;
            // SAFETY: the descriptor is `self.socket`'s, which stays open for
            // as long as `self.ready` (dropped first) keeps it registered.
            let fd = unsafe {
                AsyncFd::register_with_interest(self.socket.as_raw_fd(), Interest::READABLE)
            };
            let fd = fd.map_err(|e| e.into_parts().1)?;
            let _ = self.ready.set(fd);
            Ok(())
        }

        /// Whether it listens (its first listen() has happened).
        pub fn is_listening(&self) -> bool {
            self.ready.get().is_some()
        }

        /// Ready when a client waits to be accepted (or accepting would fail).
        pub fn poll_ready(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
            match self.ready.get() {
                Some(fd) => fd.poll_read_ready(cx).map(|_| ()),
                None => Poll::Pending,
            }
        }

        /// accept(): the next client waiting in the backlog, as a
        /// non-blocking socket, with its address.
        pub fn poll_accept(
            &self,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<(Socket, SocketAddr)>> {
            let Some(fd) = self.ready.get() else { return Poll::Pending };
            loop {
                let mut ready = ready!(fd.poll_read_ready(cx))?;
                // `try_io` forgets the readiness when the backlog turns out empty.
                let Ok(accepted) = ready.try_io(|_| self.socket.accept()) else { continue };
                return Poll::Ready(accepted.and_then(|(socket, peer)| {
                    socket.set_nonblocking(true)?;
                    let peer = peer.as_socket().ok_or(std::io::ErrorKind::InvalidInput)?;
                    Ok((socket, peer))
                }));
            }
        }

        /// Stops listening: the clients waiting are reset, new ones refused.
        /// (The socket stays bound, so that nothing else takes the address
        /// while the host finishes.) Linux stops a listener with
        /// shutdown(SHUT_RD).
        #[cfg(target_os = "linux")]
        pub fn close(self: &Arc<Self>) {
            let _ = self.socket.shutdown(std::net::Shutdown::Read);
        }

        /// Stops listening, where shutdown() cannot: XNU (macOS) answers
        /// it with ENOTCONN on a socket that is not connected, a listener
        /// included, and changes nothing (`soshutdown` in
        /// bsd/kern/uipc_socket.c). So the listener is closed: in one step
        /// (dup2) its descriptor becomes a fresh socket, which is then
        /// bound to the same address without listening. The clients
        /// waiting are reset with the listener, new ones refused, and the
        /// port is the host's again but for the instant between the two.
        #[cfg(not(target_os = "linux"))]
        pub fn close(self: &Arc<Self>) {
            let Ok(fresh) = super::new_socket(self.local) else { return };
            // SAFETY: dup2 makes `self.socket`'s descriptor refer to
            // `fresh`'s socket, closing the listener it referred to; both
            // descriptors stay open and owned as before.
            if unsafe { libc::dup2(fresh.as_raw_fd(), self.socket.as_raw_fd()) } == -1 {
                return;
            }
            let _ = self.socket.bind(&socket2::SockAddr::from(self.local));
        }

        /// Forgets that a client is waiting, until the system says so again:
        /// when none can be accepted for now (no descriptor left), so that
        /// the guest waits for the next event instead of finding its
        /// listener ready again at once.
        pub fn forget_readiness(&self) {
            let mut noop = TaskContext::from_waker(std::task::Waker::noop());
            if let Some(fd) = self.ready.get() {
                if let Poll::Ready(Ok(mut ready)) = fd.poll_read_ready(&mut noop) {
                    ready.clear_ready();
                }
            }
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use crate::sockets::ErrorCode;
    use std::os::windows::io::AsRawSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, OnceLock};

    type Accepted = std::io::Result<(Socket, SocketAddr)>;

    /// A bound TCP socket that is, or is about to be, listening.
    pub struct Listener {
        /// Once listening: the runtime's listener, on a handle of its own
        /// to the same socket (a duplicate of `socket`'s): each handle has
        /// one owner, which closes it.
        listening: OnceLock<tokio::net::TcpListener>,
        /// A client accepted to learn that one waits, kept for the guest.
        waiting: Mutex<Option<Accepted>>,
        /// Closed by a graceful stop: no client is offered any more.
        closed: AtomicBool,
        pub(super) socket: Socket,
        pub(super) local: SocketAddr,
    }

    impl Listener {
        pub fn new(socket: Socket) -> std::io::Result<Arc<Listener>> {
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?.as_socket().ok_or(std::io::ErrorKind::InvalidInput)?;
            Ok(Arc::new(Listener {
                listening: OnceLock::new(),
                waiting: Mutex::new(None),
                closed: AtomicBool::new(false),
                socket,
                local,
            }))
        }

        /// listen(): the first call starts listening; Windows keeps the
        /// first backlog (a later call succeeds and changes nothing).
        pub fn listen(&self, backlog: u32) -> Result<(), ErrorCode> {
            let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
            self.socket.listen(backlog)?;
            if self.listening.get().is_some() {
                return Ok(());
            }
            // A handle of the runtime's own (WSADuplicateSocket): if the
            // runtime refuses it, it closes that one, never `self.socket`.
            let duplicate = std::net::TcpListener::from(self.socket.try_clone()?);
            let _ = self.listening.set(tokio::net::TcpListener::from_std(duplicate)?);
            Ok(())
        }

        /// Whether it listens (its first listen() has happened).
        pub fn is_listening(&self) -> bool {
            self.listening.get().is_some()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Option<Accepted>> {
            self.waiting.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Ready when a client waits to be accepted (or accepting would fail).
        pub fn poll_ready(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
            if self.closed.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            let mut waiting = self.lock();
            if waiting.is_none() {
                let Some(listener) = self.listening.get() else { return Poll::Pending };
                *waiting = Some(std::task::ready!(listener.poll_accept(cx)).and_then(socket));
            }
            Poll::Ready(())
        }

        /// accept(): the client kept, or the next one waiting, as a
        /// non-blocking socket, with its address.
        pub fn poll_accept(&self, cx: &mut TaskContext<'_>) -> Poll<Accepted> {
            if let Some(kept) = self.lock().take() {
                return Poll::Ready(kept);
            }
            let Some(listener) = self.listening.get() else { return Poll::Pending };
            listener.poll_accept(cx).map(|accepted| accepted.and_then(socket))
        }

        /// Stops offering clients: those waiting are reset, and so is each
        /// one that connects from now on. Windows cannot stop a socket
        /// listening but by closing it, and the host keeps the port until
        /// it exits, so that nothing else takes it meanwhile.
        pub fn close(self: &Arc<Self>) {
            if self.closed.swap(true, Ordering::SeqCst) {
                return;
            }
            self.reset_waiting();
            let listener = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    let next = std::future::poll_fn(|cx| listener.poll_accept(cx)).await;
                    if let Ok((client, _)) = next {
                        let _ = client.set_linger(Some(std::time::Duration::ZERO));
                    }
                }
            });
        }

        /// Nothing to forget: readiness here is a client held.
        pub fn forget_readiness(&self) {}
    }

    /// The runtime's stream, back to a plain non-blocking socket.
    fn socket((stream, peer): (tokio::net::TcpStream, SocketAddr)) -> Accepted {
        let socket = Socket::from(stream.into_std()?);
        socket.set_nonblocking(true)?;
        Ok((socket, peer))
    }

    /// SO_EXCLUSIVEADDRUSE (which socket2 does not set): no other socket
    /// may bind this address, whatever options it sets.
    pub fn set_exclusive_address_use(socket: &Socket) -> std::io::Result<()> {
        use windows_sys::Win32::Networking::WinSock::{
            setsockopt, SOL_SOCKET, SO_EXCLUSIVEADDRUSE,
        };
        let on: i32 = 1;
        // SAFETY: setsockopt reads `size_of::<i32>()` bytes from `on`.
        let status = unsafe {
            setsockopt(
                socket.as_raw_socket() as usize,
                SOL_SOCKET,
                SO_EXCLUSIVEADDRUSE,
                (&on as *const i32).cast(),
                std::mem::size_of::<i32>() as i32,
            )
        };
        match status {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}
