//! Upgrading the host's own executable in place (SIGUSR2, `wasi-tcp-host
//! upgrade PID`): the running host hands its listeners to the executable
//! now installed where it was started from, and drains. Under a steady
//! load of short and long connections no client is refused, none waits
//! long to connect, and every byte is echoed; a new executable that does
//! not start changes nothing.

use crate::support::clients::echo;
use crate::support::{connect, harness, prepare, with_timeouts, Host, HOST_BIN, PATIENCE};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a client may wait to connect while the host is upgraded.
const CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// The host executable, installed where a test can replace it: a copy.
struct Installed {
    _dir: tempfile::TempDir,
    path: PathBuf,
    runtime: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasi-tcp-host");
        copy_in_a_child(HOST_BIN.as_ref(), &path);
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        Installed { _dir: dir, path, runtime }
    }

    /// A new build installed over it, the way `install` does: a new file
    /// renamed over the old one (the running host keeps the old inode).
    fn install(&self, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let (staged, next) = (self.path.with_extension("staged"), self.path.with_extension("next"));
        std::fs::write(&staged, contents).unwrap();
        copy_in_a_child(&staged, &next);
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }

    fn start(&self, args: &[&str]) -> Host {
        let mut cmd = Command::new(&self.path);
        prepare(&mut cmd).env("RUNTIME_DIRECTORY", &self.runtime).args(args);
        Host::start_command(&mut cmd)
    }

    /// `wasi-tcp-host upgrade PID`: whether it succeeded, and what it said.
    fn upgrade(&self, host: &Host) -> (bool, String) {
        crate::support::ask_host("upgrade", &self.runtime, host)
    }
}

/// Copies `from` to `to` in a child process (`cp`), never in this one:
/// while this process holds a file open for writing, a child another test
/// forks at that moment holds it too until it executes, and running the
/// file then fails with ETXTBSY ("Text file busy").
fn copy_in_a_child(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp {} {}: {status}", from.display(), to.display());
}

/// The new host an upgrade started: not the test's child, so the test
/// makes itself the reaper of orphans (the new host is one once the old
/// one exits) to wait for it; stopped when the test ends, however.
struct NewHost(libc::pid_t);

impl NewHost {
    fn from_outcome(said: &str) -> NewHost {
        let pid = said
            .split("process ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no process id in {said:?}"));
        NewHost(pid)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) only sends a signal.
        assert_eq!(unsafe { libc::kill(self.0, signal) }, 0, "kill {}", self.0);
    }

    /// Its exit status, once it has exited (it is the test's child by then).
    fn wait(self) -> i32 {
        harness::waiting_for(|| format!("the new host (process {}) to exit", self.0));
        let deadline = Instant::now() + PATIENCE;
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes the status of one child, or fails.
            let got = unsafe { libc::waitpid(self.0, &mut status, libc::WNOHANG) };
            if got == self.0 {
                std::mem::forget(self);
                return status;
            }
            assert!(Instant::now() < deadline, "the new host did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NewHost {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on a process this test started (indirectly).
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Orphans (the new host, once the old one exits) become this process's
/// children, so that it can wait for them.
fn reap_orphans() {
    // SAFETY: prctl only sets this process's attribute.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
}

/// What the clients saw while the host was upgraded.
#[derive(Default)]
struct Seen {
    short: usize,
    /// Long clients connected (and echoed once).
    long: usize,
    failures: Vec<String>,
    slowest_connect: Duration,
}

/// Short connections, one after another, until `stop`: each connects,
/// echoes, and closes; every failure and the slowest connect recorded.
fn short_clients(addr: SocketAddr, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let outcome = TcpStream::connect(addr).map(with_timeouts);
        let took = started.elapsed();
        let failure = match outcome {
            Err(e) => Some(format!("connect: {e}")),
            Ok(mut client) => (!echo(&mut client, b"short")).then(|| "no echo".to_string()),
        };
        let mut seen = seen.lock().unwrap();
        seen.slowest_connect = seen.slowest_connect.max(took);
        seen.short += 1;
        seen.failures.extend(failure);
    }
}

/// A long connection: echoes every few milliseconds until `stop`, then
/// closes; a failure recorded.
fn long_client(addr: SocketAddr, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut client = connect(addr);
    if !echo(&mut client, b"first") {
        return seen.lock().unwrap().failures.push("long client: no first echo".to_string());
    }
    seen.lock().unwrap().long += 1;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if !echo(&mut client, format!("long {i}").as_bytes()) {
            return seen.lock().unwrap().failures.push(format!("long client: no echo of {i}"));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Upgrades `host` (started from `installed`) while short and long
/// clients connect to `addr`; returns the new host, once the old one has
/// drained and exited, and what the old one logged.
fn upgrade_under_load(installed: &Installed, host: Host, addr: SocketAddr) -> (NewHost, String) {
    reap_orphans();
    let (stop_short, stop_long) = (AtomicBool::new(false), AtomicBool::new(false));
    let seen = Mutex::new(Seen::default());
    let (new, output) = std::thread::scope(|scope| {
        // Should this thread fail, the clients stop, so that it fails at
        // once, saying why, rather than waiting for them without end.
        let _stop_on_failure = StopWhenDropped([&stop_short, &stop_long]);
        for _ in 0..4 {
            scope.spawn(|| long_client(addr, &stop_long, &seen));
        }
        scope.spawn(|| short_clients(addr, &stop_short, &seen));
        scope.spawn(|| short_clients(addr, &stop_short, &seen));
        wait_for_short_clients(&seen, 50);
        harness::waiting_for(|| "the long clients to connect".to_string());
        let deadline = Instant::now() + PATIENCE;
        while seen.lock().unwrap().long < 4 {
            assert!(Instant::now() < deadline, "the long clients did not connect");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A new build, installed where the host was started from.
        installed.install(&std::fs::read(HOST_BIN).unwrap());
        let (ok, said) = installed.upgrade(&host);
        assert!(ok, "{said}\n{}", host.report());
        let new = NewHost::from_outcome(&said);
        assert_ne!(new.0 as u32, host.pid());
        // The new host takes the short clients; the old one serves its
        // long clients until they leave, then exits.
        let served_before = seen.lock().unwrap().short;
        wait_for_short_clients(&seen, served_before + 200);
        stop_long.store(true, Ordering::SeqCst);
        harness::waiting_for(|| "the old host to drain and exit".to_string());
        let deadline = Instant::now() + PATIENCE;
        while !host.has_exited() {
            assert!(Instant::now() < deadline, "the old host did not exit\n{}", host.report());
            std::thread::sleep(Duration::from_millis(5));
        }
        let served_by_the_old_one_alone = seen.lock().unwrap().short;
        wait_for_short_clients(&seen, served_by_the_old_one_alone + 200);
        stop_short.store(true, Ordering::SeqCst);
        (new, host.output())
    });
    let seen = seen.into_inner().unwrap();
    assert!(seen.failures.is_empty(), "{:?}\n{output}", seen.failures);
    assert!(
        seen.slowest_connect < CONNECT_WITHIN,
        "a client waited {:?} to connect\n{output}",
        seen.slowest_connect
    );
    eprintln!(
        "{} short connections, none refused; the slowest connected in {:?}",
        seen.short, seen.slowest_connect
    );
    (new, output)
}

/// Sets its flags when dropped.
struct StopWhenDropped<'a>([&'a AtomicBool; 2]);

impl Drop for StopWhenDropped<'_> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

fn wait_for_short_clients(seen: &Mutex<Seen>, n: usize) {
    harness::waiting_for(|| format!("{n} short connections echoed"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = seen.lock().unwrap();
        assert!(seen.failures.is_empty(), "{:?}", seen.failures);
        if seen.short >= n {
            return;
        }
        drop(seen);
        assert!(Instant::now() < deadline, "fewer than {n} short connections");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The whole path: the old host hands over its listener and its metrics
/// listener; the new one serves (metrics included) and names itself in
/// the outcome; the old one drains its long clients and exits with 0.
fn an_upgrade_refuses_and_stalls_no_client() {
    let installed = Installed::new();
    let reserved = crate::support::reserved_addr();
    let addr = reserved.addr.to_string();
    let host =
        installed.start(&["--listen", &addr, "--metrics", "127.0.0.1:0", "--drain-timeout", "5m"]);
    let metrics = host.metrics_addr();
    host.wait_for(&format!("guest listening on {addr}"));
    let (new, output) = upgrade_under_load(&installed, host, reserved.addr);
    for line in [
        "upgrade: started the new host (process",
        "with 2 sockets; this one serves until it does",
        "upgrade: the new host (process",
        "upgrade: guest instance #1 takes no new clients; it serves its",
        "upgrade: guest instance #1 has no clients left; stopped it",
    ] {
        assert!(output.contains(line), "no {line:?} in\n{output}");
    }
    // The metrics port answers, from the new host now.
    // (Every client has closed; the new host counts the last few closes
    // as it reads them.)
    crate::observe::wait_for_sample(metrics, "wasi_tcp_host_connections_open", 0.0);
    new.signal(libc::SIGTERM);
    let status = new.wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}");
}

/// With an instance per client: the same, the new host taking every new
/// client.
fn an_upgrade_with_per_client_refuses_and_stalls_no_client() {
    let installed = Installed::new();
    let reserved = crate::support::reserved_addr();
    let addr = reserved.addr.to_string();
    let guest = crate::support::guests::test_guest("echo-stdio");
    let host = installed.start(&[
        "--per-client",
        guest.to_str().unwrap(),
        "--listen",
        &addr,
        "--drain-timeout",
        "5m",
    ]);
    host.wait_for(&format!("per-client: listening on {addr}"));
    let (new, output) = upgrade_under_load(&installed, host, reserved.addr);
    assert!(output.contains("stop: every client has left; stopped"), "{output}");
    new.signal(libc::SIGTERM);
    let status = new.wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}");
}

/// A new executable that does not serve (here: one that exits at once)
/// changes nothing: `upgrade` fails, saying why, and the old host goes on
/// serving every client on the same listener.
fn an_upgrade_whose_new_host_does_not_start_changes_nothing() {
    let installed = Installed::new();
    let host = installed.start(&["--listen", "127.0.0.1:0"]);
    let addr = host.listen_addr();
    let mut before = connect(addr);
    assert!(echo(&mut before, b"before"));
    installed.install(b"#!/bin/sh\necho 'the broken build' >&2\nexit 3\n");
    let (ok, said) = installed.upgrade(&host);
    assert!(!ok, "{said}");
    assert!(said.contains("the new host exited (exit status: 3) before it served"), "{said}");
    host.wait_for(
        "upgrade failed: the new host exited (exit status: 3) before it served; this \
                   host goes on serving",
    );
    assert!(echo(&mut before, b"still served"), "{}", host.report());
    assert!(echo(&mut connect(addr), b"a new client"), "{}", host.report());
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        an_upgrade_refuses_and_stalls_no_client,
        an_upgrade_with_per_client_refuses_and_stalls_no_client,
        an_upgrade_whose_new_host_does_not_start_changes_nothing,
    ]
}
