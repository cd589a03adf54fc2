//! TCP_NODELAY on the guest's listening sockets, and so on every client
//! they accept (Linux copies it from the listener to each accepted socket).
//!
//! Why: with Nagle's algorithm on, a small segment waits while earlier
//! bytes are unacknowledged, and a client that delays its ACKs makes it
//! wait 40 ms or more. A send() larger than one segment ends in a small one
//! (a 64 KiB echo on loopback: 65 483 bytes, then 53), so an echo server
//! hits exactly that: about 1 round trip of 64 KiB in 250 took 44 ms
//! instead of 0.2 with Nagle on, none with it off. WinSock and BSD programs
//! turn it off with `setsockopt(TCP_NODELAY)`, but wasi:sockets 0.2 has no
//! such option, so the host does it for the guest, as Go does for every
//! TCP connection. `--nagle` keeps the system default.
//!
//! wasmtime-wasi owns the socket and does not hand out its descriptor, so
//! the host finds it by its address when the guest asks to listen: the
//! socket is then bound to that address and not yet listening.

use std::net::SocketAddr;

/// Sets TCP_NODELAY on the bound, not yet listening TCP socket at `addr`;
/// with `--trace`, says so in the trace, where a WinSock server would have
/// called setsockopt itself.
pub fn set_on_listener(addr: SocketAddr, trace: bool) {
    if addr.port() == 0 {
        // A listen without a bind: the system binds the socket only as it
        // starts listening, so nothing identifies it yet.
        return tracing::debug!("TCP_NODELAY not set: the guest listens without binding first");
    }
    match find_and_set(addr) {
        Ok(1) if trace => crate::trace::line(
            "setsockopt(TCP_NODELAY, 1)",
            "(not in wasi:sockets: the host sets it, see --nagle) -> ok",
        ),
        Ok(1) => tracing::debug!("TCP_NODELAY set on the listener at {addr}"),
        Ok(found) => tracing::warn!(
            "TCP_NODELAY: {found} sockets bound to {addr} instead of 1; its clients keep Nagle's algorithm"
        ),
        Err(e) => tracing::warn!(
            "could not set TCP_NODELAY on the listener at {addr} ({e}); its clients keep Nagle's algorithm"
        ),
    }
}

/// Counts the bound, not yet listening TCP sockets at `addr`, and sets the
/// option if there is exactly one (the guest's).
#[cfg(target_os = "linux")]
fn find_and_set(addr: SocketAddr) -> std::io::Result<usize> {
    use socket2::{SockRef, Type};
    use std::os::fd::{FromRawFd, OwnedFd};

    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        // Work on a private duplicate: the listed descriptor may be closed
        // (and its number reused) by another thread at any moment, while a
        // duplicate refers to the same socket for as long as it is held.
        // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (failing if it is closed)
        // and returns a new descriptor owned by nobody else.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            continue;
        }
        // SAFETY: `copy` is a new, open descriptor that only this owns.
        let copy = unsafe { OwnedFd::from_raw_fd(copy) };
        let socket = SockRef::from(&copy);
        let is_it = socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
            && socket.r#type().is_ok_and(|t| t == Type::STREAM)
            && socket.is_listener().is_ok_and(|listening| !listening);
        if is_it {
            found.push(copy);
        }
    }
    if let [socket] = &found[..] {
        SockRef::from(socket).set_tcp_nodelay(true)?;
    }
    Ok(found.len())
}

#[cfg(not(target_os = "linux"))]
fn find_and_set(_addr: SocketAddr) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "finding the socket needs Linux's /proc/self/fd",
    ))
}
