//! Telling a service manager how the host is doing:
//!
//! - systemd's notify protocol (sd_notify(3)), when it set NOTIFY_SOCKET
//!   (`Type=notify`): READY=1 once a guest serves every granted address,
//!   RELOADING=1 when a swap starts and READY=1 when it has ended, STOPPING=1
//!   when the host stops, and a STATUS line for each;
//! - its watchdog (`WatchdogSec=`): WATCHDOG=1 from the serving thread
//!   itself, at half the interval systemd asks for, so that a serving
//!   thread that hangs gets the host restarted;
//! - the outcome of each swap, in `$RUNTIME_DIRECTORY/reload` (systemd's
//!   `RuntimeDirectory=`), where `wasi-tcp-host reload PID` (the unit's
//!   `ExecReload=`) waits for it, so that a swap that fails makes
//!   `systemctl reload` fail; and of each upgrade (`upgrade.rs`), in
//!   `$RUNTIME_DIRECTORY/upgrade`, for `wasi-tcp-host upgrade PID`;
//! - a host started by an upgrade tells the old host, through a pipe, when
//!   it serves; the old one then names it the main process (MAINPID=) and
//!   says nothing more.
//!
//! None of it ever makes the serving thread wait for the service manager:
//! what finds its queue full goes later, in order (`notify/courier.rs`).
//!
//! All are Unix (the notify protocol is systemd's, on Linux); on Windows
//! there is no service manager to tell, and no SIGHUP to send (`--watch`
//! swaps there).

use anyhow::{bail, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(unix)]
use std::sync::Mutex;
use std::time::Duration;
#[cfg(unix)]
use {anyhow::Context, std::time::Instant};

#[cfg(unix)]
type NotifySocket = (std::os::unix::net::UnixDatagram, std::os::unix::net::SocketAddr);
#[cfg(windows)]
type NotifySocket = std::convert::Infallible;

#[cfg(unix)]
mod courier;

/// What the watchdog is told: a ping that cannot go now says nothing
/// later (the next one goes), so it never waits in the courier.
const WATCHDOG: &str = "WATCHDOG=1";

pub struct Notifier {
    socket: Option<NotifySocket>,
    /// What the service manager had no room for, on its way (started the
    /// first time).
    #[cfg(unix)]
    courier: std::sync::OnceLock<courier::Courier>,
    /// Where swaps' and upgrades' outcomes go, and how many there were.
    swaps: Outcomes,
    upgrades: Outcomes,
    ready: bool,
}

/// A file of outcomes: the last one, numbered.
struct Outcomes {
    path: Option<PathBuf>,
    count: u64,
}

impl Outcomes {
    /// Numbering on from the file's last (a host started by an upgrade
    /// goes on where the old one stopped).
    fn in_runtime_directory(name: &str) -> Outcomes {
        let path = std::env::var_os("RUNTIME_DIRECTORY").map(|dir| PathBuf::from(dir).join(name));
        let count = path.as_deref().map_or(0, last_number);
        Outcomes { path, count }
    }

    fn write(&mut self, outcome: Result<&str, &str>) {
        self.count += 1;
        let line = match outcome {
            Ok(message) => format!("{} ok {message}\n", self.count),
            Err(message) => format!("{} failed {message}\n", self.count),
        };
        if let Some(path) = &self.path {
            let _ = write_outcome(path, &line);
        }
    }
}

/// This host has handed its sockets to a new one (an upgrade): from now
/// on it tells the service manager nothing (the new host is the main
/// process), and feeds no watchdog.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// The pipe to the host this one upgrades, until it is told "ready".
#[cfg(unix)]
static UPGRADE_PIPE: Mutex<Option<std::os::fd::OwnedFd>> = Mutex::new(None);

/// This host was started by an upgrade: it says "ready" through `pipe`.
#[cfg(unix)]
pub fn tell_ready_through(pipe: std::os::fd::OwnedFd) {
    *UPGRADE_PIPE.lock().unwrap_or_else(|e| e.into_inner()) = Some(pipe);
}

#[cfg(windows)]
fn tell_the_old_host() -> bool {
    false
}

/// Tells the old host this one serves, if an upgrade started it: whether it did.
#[cfg(unix)]
fn tell_the_old_host() -> bool {
    let Some(pipe) = UPGRADE_PIPE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return false;
    };
    use std::io::Write;
    let _ = std::fs::File::from(pipe).write_all(b"ready\n");
    true
}

impl Notifier {
    /// From the environment the service manager gave the host.
    pub fn from_env() -> Notifier {
        let socket =
            std::env::var_os("NOTIFY_SOCKET").and_then(|path| notify_socket(path.to_str()?));
        Notifier {
            socket,
            #[cfg(unix)]
            courier: std::sync::OnceLock::new(),
            swaps: Outcomes::in_runtime_directory("reload"),
            upgrades: Outcomes::in_runtime_directory("upgrade"),
            ready: false,
        }
    }

    fn send(&self, state: &str) {
        if HANDED_OVER.load(Ordering::SeqCst) {
            return;
        }
        #[cfg(unix)]
        if let Some((socket, addr)) = &self.socket {
            // The socket never waits (see courier.rs); behind what waits
            // already, or when there is no room, the courier sends it.
            if !self.courier.get().is_some_and(courier::Courier::behind) {
                match socket.send_to_addr(state.as_bytes(), addr) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return,
                }
            }
            if state != WATCHDOG {
                self.courier.get_or_init(|| courier::Courier::start(addr.clone())).post(state);
            }
        }
        #[cfg(windows)]
        let _ = (&self.socket, state);
    }

    /// Readiness may have changed: READY=1 the first time it holds (or,
    /// for a host an upgrade started, "ready" to the old host, which tells
    /// the service manager).
    pub fn readiness(&mut self, ready: bool, serving: &str) {
        if ready && !self.ready && !tell_the_old_host() {
            self.send(&format!("READY=1\nSTATUS=serving; granted: {serving}"));
        }
        self.ready |= ready;
    }

    /// An upgrade failed: this host goes on serving.
    pub fn upgrade_failed(&mut self, why: &str) {
        self.upgrades.write(Err(why));
    }

    /// An upgrade's new host (process `pid`) serves: it is the main
    /// process from now on, and this one says nothing more.
    pub fn hand_over(&mut self, pid: u32) {
        let message = format!("the new host (process {pid}) serves");
        self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={message}"));
        self.upgrades.write(Ok(&message));
        HANDED_OVER.store(true, Ordering::SeqCst);
    }

    /// A swap begins (SIGHUP).
    pub fn reloading(&self) {
        let now = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=swapping the guest"));
    }

    /// A swap ended: READY=1 again, and the outcome where `reload` waits.
    pub fn reloaded(&mut self, outcome: Result<(), &str>) {
        let message = match outcome {
            Ok(()) => "the new guest serves".to_string(),
            Err(why) => format!("swap failed: {why}"),
        };
        self.send(&format!("READY=1\nSTATUS={message}"));
        self.swaps.write(match outcome {
            Ok(()) => Ok(&message),
            Err(_) => Err(&message),
        });
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
    let socket = UnixDatagram::unbound().ok()?;
    socket.set_nonblocking(true).ok()?;
    Some((socket, addr))
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
    ask(pid, (libc::SIGHUP, "reload"), "the swap", within)
}

/// `wasi-tcp-host upgrade PID`: asks the host running as PID to hand its
/// sockets to the executable installed where it was started from
/// (SIGUSR2), and waits for the outcome.
#[cfg(unix)]
pub fn upgrade(pid: u32, within: Duration) -> Result<String> {
    ask(pid, (libc::SIGUSR2, "upgrade"), "the upgrade", within)
}

/// Sends `signal` to PID and waits for the outcome it writes to `file`
/// in $RUNTIME_DIRECTORY.
#[cfg(unix)]
fn ask(
    pid: u32,
    (signal, file): (libc::c_int, &str),
    what: &str,
    within: Duration,
) -> Result<String> {
    let dir = std::env::var_os("RUNTIME_DIRECTORY").context(
        "RUNTIME_DIRECTORY is not set: the host reports swaps and upgrades there (systemd's \
         RuntimeDirectory=; from a shell: RUNTIME_DIRECTORY=/run/wasi-tcp-host)",
    )?;
    let path = PathBuf::from(dir).join(file);
    let owner = process_owner(pid);
    let (before, _) = last_outcome(&path, owner);
    send_signal(pid, signal)?;
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
        if ended(pid) {
            bail!("the host (process {pid}) ended before finishing {what}");
        }
        if Instant::now() > deadline {
            bail!("the host did not finish {what} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` is gone, or has exited and waits to be reaped
/// (a zombie, on Linux): its outcome will never come.
#[cfg(unix)]
fn ended(pid: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(pid) else { return true };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if unsafe { libc::kill(id, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // /proc/PID/stat: "PID (name) STATE ...", the name in parentheses.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// The user a process runs as (Linux: its /proc directory's owner); None
/// where that cannot be told.
#[cfg(unix)]
fn process_owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).ok().map(|meta| meta.uid())
}

#[cfg(unix)]
fn send_signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("not a process id")?;
    // SAFETY: kill(2) only sends a signal.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot signal process {pid}: {e}");
    }
    Ok(())
}

#[cfg(windows)]
pub fn reload(_: u32, _: Duration) -> Result<String> {
    bail!("`reload` sends SIGHUP, which Windows does not have: run the host with --watch instead")
}

#[cfg(windows)]
pub fn upgrade(_: u32, _: Duration) -> Result<String> {
    bail!("`upgrade` sends SIGUSR2 and hands sockets over the Unix way: not on Windows")
}

/// The number of the last outcome in `path` this user wrote.
#[cfg(unix)]
fn last_number(path: &std::path::Path) -> u64 {
    // SAFETY: getuid only reads the process's user id.
    last_outcome(path, Some(unsafe { libc::getuid() })).0
}

#[cfg(windows)]
fn last_number(_: &std::path::Path) -> u64 {
    0
}

/// systemd's watchdog (`WatchdogSec=`): how often to say WATCHDOG=1 (half
/// its interval), if it watches this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    if pid.is_some_and(|pid| pid.parse() != Ok(std::process::id())) {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Says WATCHDOG=1 every `interval`, from the task that runs this: spawn
/// it on the serving thread, so that the watchdog sees that thread hang.
pub async fn feed_the_watchdog(interval: Duration) {
    let notifier = Notifier::from_env();
    let mut ticks = tokio::time::interval(interval);
    // After a stall, one ping, not one for each tick missed.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notifier.send(WATCHDOG);
    }
}
