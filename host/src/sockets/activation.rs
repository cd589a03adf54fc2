//! Socket activation, systemd's protocol (sd_listen_fds(3)): a service
//! manager opens the listening sockets and starts the host with them as
//! descriptors 3, 4, ..., saying so in LISTEN_FDS (how many), LISTEN_PID
//! (for which process) and LISTEN_FDNAMES (their names, `:`-separated).
//! Each becomes the listener the host keeps for its address, so the host
//! itself binds nothing and needs no right to bind a low port.
//!
//! A Unix protocol: on Windows, LISTEN_FDS is refused with one line.

use anyhow::{bail, Result};
use socket2::Socket;
use std::net::SocketAddr;
#[cfg(unix)]
use {
    anyhow::Context,
    socket2::Type,
    std::os::fd::{FromRawFd, RawFd},
};

/// The first descriptor passed (after stdin, stdout, stderr).
#[cfg(unix)]
const FIRST: RawFd = 3;

/// A listening socket a service manager (or the host this one upgrades)
/// handed over.
pub struct Handed {
    pub addr: SocketAddr,
    pub socket: Socket,
    /// A service manager holds it too: it queues clients while no host
    /// runs, so a graceful stop leaves it open.
    pub outlives_host: bool,
}

/// Windows passes no descriptors this way: a service manager's LISTEN_FDS
/// is a mistake to say, not to ignore (the host would bind the port itself).
#[cfg(windows)]
pub fn take() -> Result<Vec<Handed>> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        bail!(
            "LISTEN_FDS is set, but socket activation is a Unix protocol: on Windows the host \
             binds its --listen addresses itself (unset LISTEN_FDS)"
        );
    }
    Ok(Vec::new())
}

/// Takes the sockets passed to this process, if any, and removes the
/// variables, as sd_listen_fds(unset=1) does. Call it before any thread
/// starts (it changes the environment).
#[cfg(unix)]
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
    let take_one = |i: RawFd| {
        let fd = FIRST + i;
        let what = match names.get(i as usize) {
            Some(name) if !name.is_empty() => format!("descriptor {fd} (\"{name}\")"),
            _ => format!("descriptor {fd}"),
        };
        adopt(fd, &format!("{what}, passed by the service manager"), true)
    };
    (0..count).map(take_one).collect()
}

/// Owns descriptor `fd`, passed to this process (`what` says by whom): a
/// TCP socket bound to an IP address, and listening if `listening`.
#[cfg(unix)]
pub fn adopt(fd: RawFd, what: &str, listening: bool) -> Result<Handed> {
    // Owning a descriptor that is not open would close whatever takes its
    // number later: look first.
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        bail!("{what}, is not open");
    }
    // SAFETY: this open descriptor was passed to this process for it to
    // own (the variable that names it says so), and nothing else in the
    // host uses it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let tcp = socket.r#type().is_ok_and(|t| t == Type::STREAM)
        && socket.local_addr().is_ok_and(|a| a.is_ipv4() || a.is_ipv6())
        && (!listening || is_listener(&socket));
    if !tcp {
        std::mem::forget(socket);
        match listening {
            true => bail!("{what}, is not a listening TCP socket"),
            false => bail!("{what}, is not a bound TCP socket"),
        }
    }
    socket.set_cloexec(true).with_context(|| format!("{what}: setting close-on-exec"))?;
    let addr = socket.local_addr()?.as_socket();
    let addr = addr.with_context(|| format!("{what} has no IP address"))?;
    Ok(Handed { addr, socket, outlives_host: true })
}

/// SO_ACCEPTCONN: socket2 reads it on Linux only; the other Unixes have it
/// too.
#[cfg(target_os = "linux")]
fn is_listener(socket: &Socket) -> bool {
    socket.is_listener().unwrap_or(false)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn is_listener(socket: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let status = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    status == 0 && value != 0
}
