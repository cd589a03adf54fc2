//! Upgrading the host's own executable without refusing a client, the way
//! nginx (SIGUSR2), HAProxy (`-x`) and Envoy (hot restart) hand their
//! listening sockets to a new binary:
//!
//! 1. SIGUSR2 (or `wasi-tcp-host upgrade PID`) asks the running host to
//!    start the executable at the path it was started from (where the new
//!    build has been installed), with the same arguments, handing it its
//!    listening sockets and its metrics listener as descriptors 3, 4, ...
//!    the way socket activation does, named in `WASI_TCP_HOST_UPGRADE`,
//!    and a pipe.
//! 2. The new host starts as any host does, but takes those sockets
//!    instead of binding; once its guest serves, it writes `ready` to the
//!    pipe.
//! 3. The old host then tells systemd that the new one is the main process
//!    (`MAINPID=`), stops offering clients to its guests (the sockets stay
//!    open: the new host accepts from them), stops serving metrics, and
//!    drains like a graceful stop. If the new host exits first, or is not
//!    ready within [`READY_WITHIN`], the old one stops it and goes on
//!    serving as if nothing had been asked.
//!
//! A client connecting meanwhile waits in the listener's queue for one
//! accept at most: both hosts accept from the same socket until the old
//! one stops. None is refused. A Unix protocol: Windows has no SIGUSR2.

use crate::notify::Notifier;
use crate::observe::Served;
use crate::sockets::activation::{self, Handed};
use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that names the descriptors an old host handed over.
const VAR: &str = "WASI_TCP_HOST_UPGRADE";
/// How long a new host has to serve before the old one gives up on it.
pub const READY_WITHIN: Duration = Duration::from_secs(300);

/// What this process was started as: the executable's path and arguments
/// (read at start, before the file can be replaced by the new build).
static ORIGIN: OnceLock<(std::path::PathBuf, Vec<std::ffi::OsString>)> = OnceLock::new();

/// The sockets this host starts with rather than binding: handed over by a
/// service manager (socket activation), or by the host this one upgrades.
pub struct Given {
    pub listeners: Vec<Handed>,
    pub metrics: Option<TcpListener>,
}

/// What one descriptor handed to a new host is.
pub enum Role {
    /// A listener; `outlives` if a service manager holds it too.
    Listener {
        #[cfg_attr(windows, allow(dead_code))]
        outlives: bool,
    },
    Metrics,
}

impl Given {
    /// Takes the sockets given to this process and removes the variables
    /// that name them. Call before any thread starts.
    pub fn take() -> Result<Given> {
        if let Ok(exe) = std::env::current_exe() {
            let _ = ORIGIN.set((exe, std::env::args_os().skip(1).collect()));
        }
        let mut listeners = activation::take()?;
        let metrics = platform::take(&mut listeners)?;
        Ok(Given { listeners, metrics })
    }
}

pub use platform::Upgrade;

/// Starts the new host with copies of this one's `listeners` (each with
/// whether a service manager holds it too) and `metrics`.
fn start(
    listeners: std::io::Result<Vec<(socket2::Socket, bool)>>,
    metrics: Option<std::io::Result<socket2::Socket>>,
) -> Result<Upgrade> {
    let listeners = listeners.context("copying the listeners for the new host")?;
    let mut sockets: Vec<(Role, socket2::Socket)> = listeners
        .into_iter()
        .map(|(socket, outlives)| (Role::Listener { outlives }, socket))
        .collect();
    if let Some(metrics) = metrics {
        sockets.push((Role::Metrics, metrics.context("copying the metrics listener")?));
    }
    let count = sockets.len();
    let upgrade = Upgrade::start(sockets)?;
    tracing::info!(
        event = "upgrade",
        "upgrade: started the new host (process {}) with {count} sockets; this one serves until \
         it does",
        upgrade.id()
    );
    Ok(upgrade)
}

/// An upgrade as either supervisor holds it: none, or a new host started
/// and not serving yet. Both call it the same way; what differs between
/// them (where the listeners' copies come from, how they stop accepting
/// and drain) stays with them.
#[derive(Default)]
pub struct Upgrading(Option<Upgrade>);

impl Upgrading {
    /// SIGUSR2: starts the new host with copies of the `listeners` (each
    /// with whether a service manager holds it too) and of the metrics
    /// listener; nothing if one is starting already.
    pub fn start(
        &mut self,
        listeners: impl FnOnce() -> std::io::Result<Vec<(socket2::Socket, bool)>>,
        metrics: Option<&Served>,
        notifier: &mut Notifier,
    ) {
        if self.0.is_some() {
            return tracing::info!(event = "upgrade", "SIGUSR2 received; already upgrading");
        }
        match start(listeners(), metrics.map(Served::handover)) {
            Ok(started) => self.0 = Some(started),
            Err(e) => self.failed(&e, notifier),
        }
    }

    /// The new host's process id once it serves, or why it will not;
    /// never, with no upgrade under way.
    pub async fn ready(&mut self) -> Result<u32> {
        match &mut self.0 {
            Some(upgrade) => upgrade.ready().await,
            None => std::future::pending().await,
        }
    }

    /// The new host will not serve: it is stopped, and this host goes on.
    pub fn failed(&mut self, why: &anyhow::Error, notifier: &mut Notifier) {
        self.abandon();
        tracing::warn!(event = "upgrade", "upgrade failed: {why:#}; this host goes on serving");
        notifier.upgrade_failed(&format!("{why:#}"));
    }

    /// Stops the new host of an upgrade under way, if any (this host is
    /// stopping).
    pub fn abandon(&mut self) {
        if let Some(upgrade) = self.0.take() {
            upgrade.abandon();
        }
    }

    /// The new host (process `pid`) serves: it is the main process and
    /// answers metrics and health from now on. The caller then stops
    /// accepting, leaving the listeners open for it, and drains.
    pub fn handed_over(&mut self, pid: u32, metrics: Option<Served>, notifier: &mut Notifier) {
        self.0 = None;
        if let Some(metrics) = metrics {
            metrics.stop();
        }
        notifier.hand_over(pid);
        tracing::info!(
            event = "upgrade",
            "upgrade: the new host (process {pid}) serves; this one takes no new clients and \
             serves those it has"
        );
    }
}

#[cfg(windows)]
mod platform {
    use super::*;

    pub fn take(_: &mut Vec<Handed>) -> Result<Option<TcpListener>> {
        if std::env::var_os(VAR).is_some() {
            bail!("{VAR} is set, but upgrades hand sockets over the Unix way: not on Windows");
        }
        Ok(None)
    }

    pub enum Upgrade {}

    impl Upgrade {
        pub fn start(_: Vec<(Role, socket2::Socket)>) -> Result<Upgrade> {
            bail!("upgrading in place is a Unix protocol")
        }

        pub async fn ready(&mut self) -> Result<u32> {
            match *self {}
        }

        pub fn abandon(self) {}

        pub fn id(&self) -> u32 {
            match *self {}
        }
    }
}

#[cfg(unix)]
mod platform {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use tokio::io::AsyncReadExt;

    /// The first descriptor handed over (after stdin, stdout, stderr).
    const FIRST: RawFd = 3;

    /// The new host's side: `listen@3,activated@4,metrics@5,ready@6`.
    pub fn take(listeners: &mut Vec<Handed>) -> Result<Option<TcpListener>> {
        let Some(spec) = std::env::var_os(VAR) else { return Ok(None) };
        std::env::remove_var(VAR);
        let spec = spec.to_str().with_context(|| format!("{VAR}={spec:?} cannot be read"))?;
        let mut metrics = None;
        for entry in spec.split(',').filter(|e| !e.is_empty()) {
            let (role, fd) = entry
                .split_once('@')
                .and_then(|(role, fd)| Some((role, fd.parse::<RawFd>().ok()?)))
                .with_context(|| format!("{VAR}: {entry:?} is not ROLE@DESCRIPTOR"))?;
            let what = format!("descriptor {fd}, handed over by the host this one upgrades");
            match role {
                "listen" | "activated" => {
                    let mut handed = activation::adopt(fd, &what, false)?;
                    handed.outlives_host = role == "activated";
                    listeners.push(handed);
                }
                "metrics" => {
                    let handed = activation::adopt(fd, &what, true)?;
                    metrics = Some(TcpListener::from(handed.socket));
                }
                "ready" => crate::notify::tell_ready_through(owned(fd, &what)?),
                _ => bail!("{VAR}: unknown role {role:?}"),
            }
        }
        Ok(metrics)
    }

    fn owned(fd: RawFd, what: &str) -> Result<OwnedFd> {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            bail!("{what} is not open");
        }
        // SAFETY: the old host handed this open descriptor to this process
        // for it to own, and nothing else here uses it. Close-on-exec: a
        // process this one starts does not get it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD on a descriptor this process owns.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(fd)
    }

    /// A new host, started and not yet serving.
    pub struct Upgrade {
        child: Child,
        ready: tokio::net::unix::pipe::Receiver,
        /// What the new host wrote so far, and until when it may.
        said: Vec<u8>,
        deadline: tokio::time::Instant,
    }

    impl Upgrade {
        /// Starts the new host with `sockets`. Must run inside the runtime.
        pub fn start(sockets: Vec<(Role, socket2::Socket)>) -> Result<Upgrade> {
            let (exe, args) = ORIGIN.get().context("the host's own path is not known")?;
            let (reader, writer) = std::io::pipe().context("making the upgrade's pipe")?;
            let count = sockets.len() as RawFd + 1;
            // Out of the way of 3, 4, ...: dup2 onto those must never
            // overwrite a descriptor still to be moved.
            let high = |fd: RawFd| -> Result<OwnedFd> {
                // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor this
                // process owns (or fails).
                let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST + count) };
                if new < 0 {
                    return Err(std::io::Error::last_os_error()).context("duplicating a socket");
                }
                // SAFETY: just made, owned by nobody else.
                Ok(unsafe { OwnedFd::from_raw_fd(new) })
            };
            let mut names = Vec::new();
            let mut moved = Vec::new();
            for (i, (role, socket)) in sockets.iter().enumerate() {
                let name = match role {
                    Role::Listener { outlives: true } => "activated",
                    Role::Listener { outlives: false } => "listen",
                    Role::Metrics => "metrics",
                };
                names.push(format!("{name}@{}", FIRST + i as RawFd));
                moved.push(high(socket.as_raw_fd())?);
            }
            names.push(format!("ready@{}", FIRST + count - 1));
            moved.push(high(OwnedFd::from(writer).as_raw_fd())?);
            let raw: Vec<RawFd> = moved.iter().map(AsRawFd::as_raw_fd).collect();
            let mut command = Command::new(exe);
            command.args(args).env(VAR, names.join(","));
            // Its own process, for the watchdog (systemd's variable names
            // this one).
            command.env_remove("WATCHDOG_PID");
            // SAFETY: only dup2, which is async-signal-safe, between fork
            // and exec; the targets are the descriptors the new host reads.
            unsafe {
                command.pre_exec(move || {
                    for (i, fd) in raw.iter().enumerate() {
                        if libc::dup2(*fd, FIRST + i as RawFd) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting the new host ({})", exe.display()))?;
            // Only the new host holds the pipe's writing end now: it closes
            // (the old host reads its end) when the new host exits.
            drop(moved);
            let ready = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
                .context("reading the upgrade's pipe")?;
            let deadline = tokio::time::Instant::now() + READY_WITHIN;
            Ok(Upgrade { child, ready, said: Vec::new(), deadline })
        }

        /// The new host's process id, once it serves; why not, if it does
        /// not. Cancel-safe: what was read so far is kept for the next call.
        pub async fn ready(&mut self) -> Result<u32> {
            loop {
                let mut chunk = [0u8; 16];
                let n = tokio::select! {
                    read = self.ready.read(&mut chunk) => read.context("reading the upgrade's pipe")?,
                    () = tokio::time::sleep_until(self.deadline) => {
                        bail!("the new host did not serve within {READY_WITHIN:?}")
                    }
                };
                if n == 0 {
                    break;
                }
                self.said.extend_from_slice(&chunk[..n]);
                if self.said.len() > 64 {
                    bail!("the new host wrote more than `ready` to its pipe");
                }
            }
            if self.said == b"ready\n" {
                return Ok(self.child.id());
            }
            // Its end closed unsaid: it is exiting (its descriptors close
            // first, then it becomes a process to reap). A moment for that.
            for _ in 0..100 {
                if let Ok(Some(status)) = self.child.try_wait() {
                    bail!("the new host exited ({status}) before it served");
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            bail!("the new host closed its pipe before it served")
        }

        pub fn id(&self) -> u32 {
            self.child.id()
        }

        /// Stops a new host that did not get ready.
        pub fn abandon(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
