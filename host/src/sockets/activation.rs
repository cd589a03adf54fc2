//! Socket activation, systemd's protocol (sd_listen_fds(3)): a service
//! manager opens the listening sockets and starts the host with them as
//! descriptors 3, 4, ..., saying so in LISTEN_FDS (how many), LISTEN_PID
//! (for which process) and LISTEN_FDNAMES (their names, `:`-separated).
//! Each becomes the listener the host keeps for its address, so the host
//! itself binds nothing and needs no right to bind a low port.

use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

/// The first descriptor passed (after stdin, stdout, stderr).
const FIRST: RawFd = 3;

/// A listening socket a service manager handed over.
pub struct Handed {
    pub addr: SocketAddr,
    pub socket: Socket,
}

/// Takes the sockets passed to this process, if any, and removes the
/// variables, as sd_listen_fds(unset=1) does. Call it before any thread
/// starts (it changes the environment).
pub fn take() -> Result<Vec<Handed>> {
    let Some(count) = std::env::var_os("LISTEN_FDS") else { return Ok(Vec::new()) };
    let pid = std::env::var("LISTEN_PID").ok().and_then(|pid| pid.parse::<u32>().ok());
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    // Meant for another process (one that started this one, say).
    if pid != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let count: RawFd = count
        .to_str()
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("LISTEN_FDS={count:?} is not a number of descriptors"))?;
    let names: Vec<&str> = names.split(':').collect();
    (0..count).map(|i| take_one(FIRST + i, names.get(i as usize).copied())).collect()
}

fn take_one(fd: RawFd, name: Option<&str>) -> Result<Handed> {
    let what = match name {
        Some(name) if !name.is_empty() => format!("descriptor {fd} (\"{name}\")"),
        _ => format!("descriptor {fd}"),
    };
    // Owning a descriptor that is not open would close whatever takes its
    // number later: look first.
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        bail!("{what}, counted in LISTEN_FDS by the service manager, is not open");
    }
    // SAFETY: the service manager passed this open descriptor to this
    // process for it to own (LISTEN_FDS counts it), and nothing else in
    // the host uses it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let tcp = socket.r#type().is_ok_and(|t| t == Type::STREAM)
        && socket.domain().is_ok_and(|d| d == Domain::IPV4 || d == Domain::IPV6)
        && socket.is_listener().unwrap_or(false);
    if !tcp {
        std::mem::forget(socket);
        bail!("{what}, passed by the service manager, is not a listening TCP socket");
    }
    socket.set_cloexec(true).with_context(|| format!("{what}: setting close-on-exec"))?;
    let addr = socket.local_addr()?.as_socket();
    let addr = addr.with_context(|| format!("{what} has no IP address"))?;
    Ok(Handed { addr, socket })
}
