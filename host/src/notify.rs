//! Telling a service manager how the host is doing:
//!
//! - systemd's notify protocol (sd_notify(3)), when it set NOTIFY_SOCKET
//!   (`Type=notify`): READY=1 once a guest serves every granted address,
//!   RELOADING=1 when a swap starts and READY=1 when it has ended, STOPPING=1
//!   when the host stops, and a STATUS line for each;
//! - the outcome of each swap, in `$RUNTIME_DIRECTORY/reload` (systemd's
//!   `RuntimeDirectory=`), where `wasi-tcp-host reload PID` (the unit's
//!   `ExecReload=`) waits for it, so that a swap that fails makes
//!   `systemctl reload` fail.
//!
//! Both are Unix (the first is systemd's, on Linux); on Windows there is no
//! service manager to tell, and no SIGHUP to send (`--watch` swaps there).

use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;
#[cfg(unix)]
use {anyhow::Context, std::time::Instant};

#[cfg(unix)]
type NotifySocket = (std::os::unix::net::UnixDatagram, std::os::unix::net::SocketAddr);
#[cfg(windows)]
type NotifySocket = std::convert::Infallible;

pub struct Notifier {
    socket: Option<NotifySocket>,
    outcomes: Option<PathBuf>,
    swaps: u64,
    ready: bool,
}

impl Notifier {
    /// From the environment the service manager gave the host.
    pub fn from_env() -> Notifier {
        let socket =
            std::env::var_os("NOTIFY_SOCKET").and_then(|path| notify_socket(path.to_str()?));
        let outcomes =
            std::env::var_os("RUNTIME_DIRECTORY").map(|dir| PathBuf::from(dir).join("reload"));
        Notifier { socket, outcomes, swaps: 0, ready: false }
    }

    fn send(&self, state: &str) {
        #[cfg(unix)]
        if let Some((socket, addr)) = &self.socket {
            let _ = socket.send_to_addr(state.as_bytes(), addr);
        }
        #[cfg(windows)]
        let _ = (&self.socket, state);
    }

    /// Readiness may have changed: READY=1 the first time it holds.
    pub fn readiness(&mut self, ready: bool, serving: &str) {
        if ready && !self.ready {
            self.send(&format!("READY=1\nSTATUS=serving; granted: {serving}"));
        }
        self.ready |= ready;
    }

    /// A swap begins (SIGHUP).
    pub fn reloading(&self) {
        let now = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=swapping the guest"));
    }

    /// A swap ended: READY=1 again, and the outcome where `reload` waits.
    pub fn reloaded(&mut self, outcome: Result<(), &str>) {
        self.swaps += 1;
        let (word, message) = match outcome {
            Ok(()) => ("ok", "the new guest serves".to_string()),
            Err(why) => ("failed", format!("swap failed: {why}")),
        };
        self.send(&format!("READY=1\nSTATUS={message}"));
        if let Some(path) = &self.outcomes {
            let line = format!("{} {word} {message}\n", self.swaps);
            let _ = write_outcome(path, &line);
        }
    }

    /// The host is stopping.
    pub fn stopping(&self, why: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={why}"));
    }
}

/// Writes the outcome file whole (a new file, then a rename), never
/// through a link: a file of that name someone else left in a shared
/// directory is removed first, and the new one is created, not opened.
fn write_outcome(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let next = path.with_extension("next");
    let _ = std::fs::remove_file(&next);
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.open(&next)?.write_all(line.as_bytes())?;
    std::fs::rename(&next, path)
}

/// NOTIFY_SOCKET: a path, or `@` and an abstract name (Linux's).
#[cfg(unix)]
fn notify_socket(path: &str) -> Option<NotifySocket> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let addr = match path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()?
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return None,
        None => SocketAddr::from_pathname(path).ok()?,
    };
    Some((UnixDatagram::unbound().ok()?, addr))
}

#[cfg(windows)]
fn notify_socket(_: &str) -> Option<NotifySocket> {
    None
}

#[cfg(windows)]
fn monotonic_usec() -> u64 {
    0
}

#[cfg(unix)]
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// The last swap's outcome: its number, and the line; nothing from a file
/// `owner` (the host's user) did not write, or others may write.
#[cfg(unix)]
fn last_outcome(path: &std::path::Path, owner: Option<u32>) -> (u64, String) {
    use std::os::unix::fs::MetadataExt;
    let trusted = std::fs::symlink_metadata(path).is_ok_and(|meta| {
        meta.is_file() && meta.mode() & 0o022 == 0 && owner.is_none_or(|uid| meta.uid() == uid)
    });
    let text = match trusted {
        true => std::fs::read_to_string(path).unwrap_or_default(),
        false => String::new(),
    };
    let number = text.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (number, text.trim_end().to_string())
}

/// `wasi-tcp-host reload PID`: asks the host running as PID to swap its
/// guest (SIGHUP) and waits for the outcome: Ok if the new guest serves,
/// an error saying why not.
#[cfg(unix)]
pub fn reload(pid: u32, within: Duration) -> Result<String> {
    let dir = std::env::var_os("RUNTIME_DIRECTORY").context(
        "RUNTIME_DIRECTORY is not set: the host reports swaps there (systemd's RuntimeDirectory=)",
    )?;
    let path = PathBuf::from(dir).join("reload");
    let owner = process_owner(pid);
    let (before, _) = last_outcome(&path, owner);
    hang_up(pid)?;
    let deadline = Instant::now() + within;
    loop {
        let (number, line) = last_outcome(&path, owner);
        if number > before {
            let outcome = line.split_once(' ').map_or("", |(_, rest)| rest);
            return match outcome.split_once(' ') {
                Some(("ok", message)) => Ok(message.to_string()),
                Some((_, message)) => bail!("{message}"),
                None => bail!("the host wrote an outcome that cannot be read: {line:?}"),
            };
        }
        if Instant::now() > deadline {
            bail!("the host did not finish the swap within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The user a process runs as (Linux: its /proc directory's owner); None
/// where that cannot be told.
#[cfg(unix)]
fn process_owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).ok().map(|meta| meta.uid())
}

#[cfg(unix)]
fn hang_up(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("not a process id")?;
    // SAFETY: kill(2) only sends a signal.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot signal process {pid}: {e}");
    }
    Ok(())
}

#[cfg(windows)]
pub fn reload(_: u32, _: Duration) -> Result<String> {
    bail!("`reload` sends SIGHUP, which Windows does not have: run the host with --watch instead")
}
