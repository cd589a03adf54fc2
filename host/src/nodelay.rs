//! TCP_NODELAY on the guest's listening sockets, and so on every client
//! they accept (Linux copies it from the listener to each accepted socket).
//!
//! Why: with Nagle's algorithm on, a small segment waits while earlier
//! bytes are unacknowledged, and a client that delays its ACKs makes it
//! wait 40 ms. A send() larger than one segment ends in a small one (a
//! 64 KiB echo on loopback: 65 483 bytes, then 53), so an echo server hits
//! exactly that: about 1 round trip of 64 KiB in 250 took 44 ms instead of
//! 0.2 with Nagle on, none with it off. WinSock and BSD programs turn it
//! off with `setsockopt(TCP_NODELAY)`, but wasi:sockets 0.2 has no such
//! option, so the host does it for the guest, as Go does for every TCP
//! connection.
//! `--nagle` keeps the system default.
//!
//! wasmtime-wasi owns the socket and does not hand out its descriptor, so
//! the host finds it by its address when the guest asks to listen: the
//! socket is then bound to that address and not yet listening.

use std::net::SocketAddr;

/// Sets TCP_NODELAY on the bound, not yet listening TCP socket at `addr`.
pub fn set_on_listener(addr: SocketAddr) {
    if find_and_set(addr) {
        tracing::debug!("TCP_NODELAY set on the listener at {addr}");
    } else {
        tracing::warn!(
            "could not set TCP_NODELAY on the listener at {addr}: its clients keep Nagle's algorithm"
        );
    }
}

#[cfg(target_os = "linux")]
fn find_and_set(addr: SocketAddr) -> bool {
    use socket2::{SockRef, Type};
    use std::os::fd::BorrowedFd;

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    let mut found = false;
    for fd in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
        // SAFETY: `fd` is open in this process (it was just listed) and
        // is only borrowed for the duration of these calls.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        let is_it = socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
            && socket.r#type().is_ok_and(|t| t == Type::STREAM)
            && socket.is_listener().is_ok_and(|listening| !listening);
        if is_it && socket.set_tcp_nodelay(true).is_ok() {
            found = true;
        }
    }
    found
}

/// Elsewhere accepted sockets do not inherit the option from the listener.
#[cfg(not(target_os = "linux"))]
fn find_and_set(_addr: SocketAddr) -> bool {
    false
}
