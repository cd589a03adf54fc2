//! What operators see and rely on: metrics and health over HTTP
//! (`--metrics`), systemd's notifications and `wasi-tcp-host reload`, a
//! policy file read again on SIGHUP, journal priorities, and a log that
//! never stalls serving.

use crate::support::clients::echo;
use crate::support::guests::{default_guest, installed, test_guest, Control};
use crate::support::{
    ask_host, connect, http_get, prepare, sample, with_timeouts, Host, HOST_BIN, PATIENCE,
};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// The host on loopback ports the system picks, with metrics; returns
/// once the guest listens.
fn observed(args: &[&str]) -> (Host, SocketAddr, SocketAddr) {
    let host = start_observed(args);
    let (addr, metrics) = (host.listen_addr(), host.metrics_addr());
    (host, addr, metrics)
}

/// The same, at once: for a guest that does not listen (yet).
fn start_observed(args: &[&str]) -> Host {
    let mut all = vec!["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"];
    all.extend(args);
    Host::start(&all)
}

/// Polls `/metrics` until `name` reads `value` (a scrape is a snapshot:
/// the host counts a client it accepts a moment after the client connects).
pub fn wait_for_sample(metrics: SocketAddr, name: &str, value: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = http_get(metrics, "/metrics");
        assert_eq!(status, 200, "{text}");
        if sample(&text, name) == Some(value) {
            return text;
        }
        assert!(Instant::now() < deadline, "{name} never read {value}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `/readyz` until it answers 200.
pub fn wait_until_ready(metrics: SocketAddr, host: &Host) {
    let deadline = Instant::now() + PATIENCE;
    while http_get(metrics, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready\n{}", host.report());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The metrics count what happens: clients open and accepted, those
/// turned away by reason, bytes both ways, guest starts; with build info.
fn the_metrics_count_clients_bytes_and_refusals() {
    let (host, addr, metrics) = observed(&["--allow-client", "127.0.0.1/32"]);
    let clients: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut client = connect(addr);
            assert!(echo(&mut client, format!("client {i}").as_bytes()));
            client
        })
        .collect();
    let text = wait_for_sample(metrics, "wasi_tcp_host_connections_open", 3.0);
    assert_eq!(sample(&text, "wasi_tcp_host_connections_accepted_total"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_received_bytes_total"), Some(24.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_sent_bytes_total"), Some(24.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_guest_starts_total"), Some(1.0), "{text}");
    assert!(text.contains("wasi_tcp_host_build_info{version=\""), "{text}");
    assert!(text.contains("wasi_version=\"0.2.12\""), "{text}");
    drop(clients);
    wait_for_sample(metrics, "wasi_tcp_host_connections_open", 0.0);
    // From 127.0.0.2, which --allow-client does not name.
    let outsider =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    outsider.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    let _ = outsider.connect(&addr.into());
    let not_allowed = "wasi_tcp_host_clients_turned_away_total{reason=\"not_allowed\"}";
    wait_for_sample(metrics, not_allowed, 1.0);
    drop(host);
}

/// /healthz while the host runs; /readyz while a guest serves, 503 (and
/// why) from the moment SIGQUIT arrives, while the host drains.
fn health_and_readiness_follow_the_guest_and_a_graceful_stop() {
    let (host, addr, metrics) = observed(&["--drain-timeout", "5m"]);
    assert_eq!(http_get(metrics, "/healthz"), (200, "ok\n".to_string()));
    wait_until_ready(metrics, &host);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"before"));
    host.signal(libc::SIGQUIT);
    host.wait_for("stop: guest instance #1 takes no new clients");
    let (status, body) = http_get(metrics, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(http_get(metrics, "/healthz").0, 200, "alive while draining");
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    assert_eq!(http_get(metrics, "/nowhere").0, 404);
}

/// A guest that never gets to listen (it traps at start, and is
/// restarted): the host is alive, never ready.
fn a_guest_that_keeps_failing_is_never_ready() {
    let trap = test_guest("trap");
    let host = start_observed(&["--restart", "on-failure", trap.to_str().unwrap()]);
    let metrics = host.metrics_addr();
    host.wait_for("restarting it in");
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    let (status, body) = http_get(metrics, "/readyz");
    assert_eq!(status, 503, "{body}\n{}", host.report());
    let text = http_get(metrics, "/metrics").1;
    assert!(
        sample(&text, "wasi_tcp_host_guest_failures_total{kind=\"trap\"}") >= Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "wasi_tcp_host_guest_restarts_total") >= Some(1.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_ready"), Some(0.0), "{text}");
}

/// A guest that served, failed and was restarted: not ready from its
/// failure until the restarted instance listens (it waits for the test
/// before it binds, so the test sees it started and not yet listening),
/// then ready again.
fn a_restarted_guest_is_ready_only_once_it_listens_again() {
    let control = Control::new();
    let guest = test_guest("crash-on-bang");
    let env = format!("CONTROL={}", control.addr());
    let host = start_observed(&[
        "--restart",
        "on-failure",
        "--allow-connect",
        &control.addr(),
        "--env",
        &env,
        guest.to_str().unwrap(),
    ]);
    drop(control.accept());
    let (addr, metrics) = (host.listen_addr(), host.metrics_addr());
    wait_until_ready(metrics, &host);
    let mut bang = connect(addr);
    std::io::Write::write_all(&mut bang, b"!").unwrap();
    let restarted = control.accept();
    let (status, body) = http_get(metrics, "/readyz");
    assert_eq!(status, 503, "ready while no guest listens: {body}\n{}", host.report());
    assert!(body.contains("no guest listens on 127.0.0.1:"), "{body}");
    let text = http_get(metrics, "/metrics").1;
    assert_eq!(sample(&text, "wasi_tcp_host_ready"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_guest_restarts_total"), Some(1.0), "{text}");
    drop(restarted);
    wait_until_ready(metrics, &host);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"served again"), "{}", host.report());
}

/// The guest can never reach the metrics: a connect there is denied even
/// when --allow-connect names every port; and --metrics where the guest
/// listens is refused at start.
fn the_metrics_address_is_the_hosts_alone() {
    let reserved = crate::support::reserved_addr();
    let own = reserved.addr.to_string();
    let probe = test_guest("sandbox-probe");
    let (status, output) = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        &own,
        "--allow-connect",
        "127.0.0.1:*",
        probe.to_str().unwrap(),
        "--",
        "127.0.0.1:9",
        &own,
        "/nowhere",
        "HOME",
        "localhost",
    ])
    .wait();
    assert!(status.success(), "{output}");
    assert!(output.contains(&format!("connect {own}: refused")), "{output}");
    assert!(
        output.contains("it is the host's own metrics address, which no grant reaches"),
        "{output}"
    );

    let (status, output) = Host::start(&["--listen", &own, "--metrics", &own]).wait();
    assert!(!status.success());
    assert!(output.contains("is where the guest listens too"), "{output}");
}

/// Health cannot be starved by whoever reaches the metrics port: with 200
/// connections open to it that send nothing (far more than it serves at
/// once), each of ten probes made as kubelet makes them (a new connection,
/// a one-second timeout) gets its answer, from /healthz and /readyz.
fn health_answers_however_many_idle_connections_hold_the_metrics_port() {
    let (host, _addr, metrics) = observed(&[]);
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(metrics).unwrap()).collect();
    for path in ["/healthz", "/readyz"].iter().cycle().take(10) {
        let (status, body) = probe(metrics, path, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("a probe of {path} failed: {e}\n{}", host.report()));
        assert_eq!(status, 200, "{body}");
    }
    drop(idle);
}

/// One HTTP GET as a kubelet probe makes it: a connection of its own and a
/// timeout on everything; the status and the body.
fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    Ok((status, body))
}

/// `--metrics 127.0.0.1:0`: the port the system picked is the host's
/// alone too; a guest told it (after the host started) and granted every
/// port on loopback is refused there.
fn a_metrics_port_the_system_picked_is_the_hosts_alone() {
    let control = Control::new();
    let guest = test_guest("connect-where-told");
    let host = Host::start(&[
        "--no-listen",
        "--metrics",
        "127.0.0.1:0",
        "--allow-connect",
        "127.0.0.1:*",
        guest.to_str().unwrap(),
        "--",
        &control.addr(),
    ]);
    let metrics = host.metrics_addr();
    let mut told = control.accept();
    std::io::Write::write_all(&mut told, format!("{metrics}\n").as_bytes()).unwrap();
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains(&format!("connect {metrics}: refused")), "{output}");
    assert!(output.contains("it is the host's own metrics address, which no grant reaches"));
}

/// A metrics listener that cannot accept (the process out of descriptors:
/// its limit lowered under what it holds) tries again after a pause, not
/// in a loop that burns a core: over two seconds with clients waiting, the
/// host uses a small part of one second of CPU.
#[cfg(target_os = "linux")]
fn a_metrics_listener_that_cannot_accept_backs_off() {
    let (host, _addr, metrics) = observed(&[]);
    let open = std::fs::read_dir(format!("/proc/{}/fd", host.pid())).unwrap().count() as u64;
    let limit = libc::rlimit { rlim_cur: open, rlim_max: open };
    // SAFETY: prlimit only reads `limit`, for the host's process (a child of ours).
    let set = unsafe {
        libc::prlimit(host.pid() as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut())
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(metrics).unwrap()).collect();
    host.wait_for("the metrics listener could not accept");
    let before = host.cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = host.cpu_time() - before;
    assert!(used < Duration::from_millis(500), "{used:?} of CPU in 2 s\n{}", host.report());
    drop(waiting);
}

/// SIGHUP reads the policy file off the thread that serves: a policy file
/// that takes its time to read (a FIFO, here, until the test writes it)
/// stalls no client meanwhile; the swap happens once it is read.
#[cfg(unix)]
fn reading_the_policy_again_never_stalls_serving() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let text = "listen = [\"127.0.0.1:0\"]\n";
    std::fs::write(&policy, text).unwrap();
    let host = Host::start(&["--policy", policy.to_str().unwrap(), "--drain-timeout", "1s"]);
    let addr = host.listen_addr();
    let mut client = connect(addr);
    assert!(echo(&mut client, b"before"));
    std::fs::remove_file(&policy).unwrap();
    let fifo = std::ffi::CString::new(policy.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    host.signal(libc::SIGHUP);
    host.wait_for("SIGHUP received: loading");
    for i in 0..20 {
        let message = format!("while the policy is read {i}");
        assert!(echo(&mut client, message.as_bytes()), "{}", host.report());
        assert!(echo(&mut connect(addr), b"a new client"), "{}", host.report());
    }
    std::fs::write(&policy, text).unwrap();
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
}

/// A datagram socket of the test's own, given to the host as
/// NOTIFY_SOCKET, the way systemd gives the host its own.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { _dir: dir, path, socket }
    }

    /// The next notification, watchdog pings (and the test's own
    /// `FILLER`s) aside.
    fn next(&self) -> String {
        self.next_where(|message| !matches!(message, "WATCHDOG=1" | "FILLER"))
    }

    /// The next datagram that `wanted` takes, within PATIENCE.
    fn next_where(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no notification wanted came");
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a notification");
            let message = String::from_utf8_lossy(&buf[..n]);
            if wanted(&message) {
                return message.to_string();
            }
        }
    }
}

/// `Type=notify`: READY=1 once the guest listens, RELOADING=1 then READY=1
/// (with the outcome) for each swap, STOPPING=1 at the end.
fn systemd_hears_ready_reloading_and_stopping() {
    let notify = NotifySocket::new();
    let next = || notify.next();
    let (_guest_dir, file) = installed(&default_guest());
    let mut cmd = crate::support::host_command();
    cmd.env("NOTIFY_SOCKET", &notify.path).args([
        "--listen",
        "127.0.0.1:0",
        file.to_str().unwrap(),
    ]);
    let host = Host::start_command(&mut cmd);
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving; granted: listen on 127.0.0.1:0"),
        "{ready}"
    );
    host.signal(libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1\nSTATUS=the new guest serves");
    std::fs::write(&file, b"not a component").unwrap();
    host.signal(libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1"));
    let failed = next();
    assert!(failed.starts_with("READY=1\nSTATUS=swap failed: "), "{failed}");
    host.signal(libc::SIGTERM);
    assert!(next().starts_with("STOPPING=1"));
}

/// A service manager that falls behind reading its notifications stalls
/// nothing and loses none of them: with the notify socket's queue full
/// (filled here; the watchdog's pings go there too), a swap happens and
/// clients are served; once the queue is read, RELOADING=1 and READY=1
/// come, in order.
#[cfg(target_os = "linux")]
fn a_service_manager_that_reads_nothing_stalls_nothing() {
    let notify = NotifySocket::new();
    let next = || notify.next();
    let (_guest_dir, file) = installed(&default_guest());
    let mut cmd = crate::support::host_command();
    // Pings every 10 ms.
    cmd.env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "20000");
    let host = Host::start_command(cmd.args(["--listen", "127.0.0.1:0", file.to_str().unwrap()]));
    let addr = host.listen_addr();
    assert!(next().starts_with("READY=1"));
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    loop {
        match filler.send_to(b"FILLER", &notify.path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the notify socket's queue: {e}"),
        }
    }
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    for i in 0..20 {
        assert!(echo(&mut connect(addr), format!("client {i}").as_bytes()), "{}", host.report());
    }
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1\nSTATUS=the new guest serves");
}

/// `wasi-tcp-host reload PID` (the unit's ExecReload=): exit status 0 when
/// the new guest serves, 1 and why when the swap fails.
fn reload_waits_for_the_swap_and_fails_when_it_does() {
    let runtime = tempfile::tempdir().unwrap();
    let (_guest_dir, file) = installed(&default_guest());
    let mut cmd = crate::support::host_command();
    cmd.env("RUNTIME_DIRECTORY", runtime.path()).args([
        "--listen",
        "127.0.0.1:0",
        file.to_str().unwrap(),
    ]);
    let host = Host::start_command(&mut cmd);
    host.listen_addr();
    let reload = || ask_host("reload", runtime.path(), &host);
    let (ok, text) = reload();
    assert!(ok && text.contains("the new guest serves"), "{text}\n{}", host.report());
    std::fs::write(&file, b"not a component").unwrap();
    let (ok, text) = reload();
    assert!(!ok, "{text}");
    assert!(
        text.contains("swap failed: ") && text.contains("is not a WebAssembly component"),
        "{text}"
    );
}

/// `reload` waits for the outcome only while the host lives: a host that
/// ends before it writes one (killed, here, while its SIGHUP was pending;
/// not reaped yet, as a service manager may not have) is one line at once,
/// never a wait of ten minutes.
#[cfg(target_os = "linux")] // reads /proc
fn reload_says_so_when_the_host_ends_before_the_swap() {
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = crate::support::host_command();
    cmd.env("RUNTIME_DIRECTORY", runtime.path());
    let host = Host::start_command(cmd.args(["--listen", "127.0.0.1:0"]));
    host.listen_addr();
    host.signal(libc::SIGSTOP);
    // Stopped before `reload` signals: else the host may still run (a
    // busy machine) and take the SIGHUP before the SIGSTOP.
    wait_for_proc_status(&host, "stopped", |status| status.contains("State:\tT"));
    let mut reload = Command::new(HOST_BIN)
        .env("RUNTIME_DIRECTORY", runtime.path())
        .args(["reload", &host.pid().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hup = 1 << (libc::SIGHUP - 1);
    wait_for_proc_status(&host, "SIGHUP pending", |status| {
        let pending = status.lines().find_map(|l| l.strip_prefix("ShdPnd:")).unwrap().trim();
        u64::from_str_radix(pending, 16).unwrap() & hup != 0
    });
    host.signal(libc::SIGKILL);
    let deadline = Instant::now() + PATIENCE;
    while reload.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = reload.kill();
            panic!("`reload` still waits {PATIENCE:?} after the host ended");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = reload.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let ended = format!("the host (process {}) ended before finishing the swap", host.pid());
    assert!(text.contains(&ended), "{text}");
}

/// Waits until the host's /proc/PID/status shows it is `what`.
#[cfg(target_os = "linux")]
fn wait_for_proc_status(host: &Host, what: &str, shows: impl Fn(&str) -> bool) {
    crate::support::harness::waiting_for(|| format!("the host {what}"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
        if shows(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "the host never {what}: {status}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The swap outcome `reload` waits for, in a RUNTIME_DIRECTORY others may
/// write to: a link planted where the host writes is not followed (the
/// file it points to is untouched), and an outcome another user wrote is
/// not believed: `reload` reports the real one.
#[cfg(target_os = "linux")]
fn a_reload_outcome_cannot_be_redirected_or_forged() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = runtime.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, runtime.path().join("reload.next")).unwrap();
    let (_guest_dir, file) = installed(&default_guest());
    let mut cmd = crate::support::host_command();
    cmd.env("RUNTIME_DIRECTORY", runtime.path());
    let host = Host::start_command(cmd.args(["--listen", "127.0.0.1:0", file.to_str().unwrap()]));
    host.listen_addr();
    let reload = || ask_host("reload", runtime.path(), &host);
    let (ok, text) = reload();
    assert!(ok && text.contains("the new guest serves"), "{text}\n{}", host.report());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");

    let outcome = runtime.path().join("reload");
    std::fs::remove_file(&outcome).unwrap();
    std::fs::write(&outcome, "99 ok the new guest serves\n").unwrap();
    std::os::unix::fs::chown(&outcome, Some(65534), Some(65534)).unwrap();
    std::fs::write(&file, b"not a component").unwrap();
    let (ok, text) = reload();
    assert!(!ok, "the forged outcome was believed: {text}");
    assert!(text.contains("is not a WebAssembly component"), "{text}");
}

/// SIGHUP reads the policy file again: a changed grant applies to the new
/// instance; a change only a restart can make is refused, and the running
/// guest goes on as it was.
fn sighup_applies_a_changed_policy_and_refuses_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "listen = [\"127.0.0.1:0\"]\n").unwrap();
    let host = Host::start(&["--policy", policy.to_str().unwrap(), "--drain-timeout", "1s"]);
    let addr = host.listen_addr();
    assert!(echo(&mut connect(addr), b"let in"));

    std::fs::write(&policy, "listen = [\"127.0.0.1:0\"]\nallow-client = [\"10.0.0.0/8\"]\n")
        .unwrap();
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    let turned_away = crate::support::connect_unless_reset(addr);
    host.wait_for("denied: TCP client from 127.0.0.1");
    if let Ok(mut client) = turned_away {
        crate::support::clients::assert_reset(&mut client);
    }

    std::fs::write(&policy, "listen = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\n").unwrap();
    host.signal(libc::SIGHUP);
    let failed = host.wait_for("swap failed:");
    assert!(
        failed.contains("the policy file changes the listen addresses, which needs a restart"),
        "{failed}"
    );
    host.settled();
    assert!(!host.output().contains("instance #3"), "{}", host.report());
}

/// Under systemd (stderr is the journal, as JOURNAL_STREAM says), each log
/// line starts with its syslog priority (6 for information, 4 for a
/// warning); elsewhere, none does.
fn under_the_journal_each_line_carries_its_priority() {
    let script = "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"";
    let mut cmd = Command::new("sh");
    let args = ["--listen", "127.0.0.1:0", "--allow-client", "127.0.0.2/32"];
    prepare(&mut cmd).args(["-c", script, HOST_BIN]).args(args);
    let host = Host::start_command(&mut cmd);
    let line = host.wait_for("guest listening on ");
    assert!(line.starts_with("<6>"), "{line}");
    let _denied = TcpStream::connect(host.listen_addr());
    let line = host.wait_for("denied: ");
    assert!(line.starts_with("<4>"), "a warning: {line}");
    host.signal(libc::SIGTERM);
    let (_, output) = host.wait();
    assert!(
        output.lines().filter(|l| l.contains(" INFO ")).all(|l| l.starts_with("<6>")),
        "{output}"
    );
    // The line a host that cannot start exits with: an error ("err", 3),
    // so that `journalctl -p warning` shows why the unit failed.
    let mut cmd = Command::new("sh");
    let args = ["--listen", "127.0.0.1:0", "/no/such/guest.wasm"];
    prepare(&mut cmd).args(["-c", script, HOST_BIN]).args(args);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(!status.success());
    let last = output.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("<3>wasi-tcp-host: error: cannot read /no/such/guest.wasm"),
        "{output}"
    );
    // A stderr that is not the journal gets no prefix, whatever the variable says.
    let mut cmd = crate::support::host_command();
    cmd.env("JOURNAL_STREAM", "1:1").args(["--listen", "127.0.0.1:0"]);
    let host = Host::start_command(&mut cmd);
    assert!(!host.wait_for("guest listening on ").starts_with('<'));
}

/// The hex SHA-256 of a file.
fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh host's /metrics: every labelled series there at 0 (so that
/// `increase()` sees the first event), label values that are snake_case
/// identifiers, the limits the policy sets, the standard process metrics,
/// and which guest serves (its component's digest).
fn a_fresh_host_shows_every_series_at_zero_its_limits_and_its_guest() {
    let args = ["--max-connections", "100", "--max-memory", "64MiB"];
    let (_host, _addr, metrics) = observed(&args);
    let text = http_get(metrics, "/metrics").1;
    for series in [
        "wasi_tcp_host_swaps_total{outcome=\"failed\"}",
        "wasi_tcp_host_swaps_total{outcome=\"took_over\"}",
        "wasi_tcp_host_drains_total{outcome=\"timed_out\"}",
        "wasi_tcp_host_clients_turned_away_total{reason=\"cap\"}",
        "wasi_tcp_host_clients_turned_away_total{reason=\"not_allowed\"}",
        "wasi_tcp_host_clients_turned_away_total{reason=\"no_descriptor\"}",
        "wasi_tcp_host_clients_closed_total{reason=\"idle_timeout\"}",
        "wasi_tcp_host_guest_failures_total{kind=\"trap\"}",
        "wasi_tcp_host_guest_failures_total{kind=\"memory\"}",
        "wasi_tcp_host_log_lines_suppressed_total{kind=\"connect_denied\"}",
        "wasi_tcp_host_log_lines_suppressed_total{kind=\"guest_stderr\"}",
        "wasi_tcp_host_log_lines_dropped_total",
        "wasi_tcp_host_guest_restarts_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}:\n{text}");
    }
    assert_eq!(sample(&text, "wasi_tcp_host_connections_max"), Some(100.0), "{text}");
    // Four instances at most (serving, starting, two draining), 64 MiB each.
    let total = sample(&text, "wasi_tcp_host_guest_memory_total_limit_bytes");
    assert_eq!(total, Some(4.0 * 64.0 * 1048576.0), "{text}");
    let digest = sha256_of(&default_guest());
    let info = format!(
        "wasi_tcp_host_guest_info{{guest=\"echo-guest (built in)\",digest=\"sha256:{digest}\"}}"
    );
    assert_eq!(sample(&text, &info), Some(1.0), "{text}");
    for name in ["process_open_fds", "process_max_fds", "process_resident_memory_bytes"] {
        assert!(sample(&text, name).is_some_and(|v| v > 0.0), "{name}:\n{text}");
    }
    let started = sample(&text, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!((now.as_secs_f64() - started).abs() < 600.0, "{started}");
    // Label values are identifiers (but the free-text ones: versions, names).
    for line in text.lines().filter(|l| l.starts_with("wasi_tcp_host_")) {
        if line.starts_with("wasi_tcp_host_build_info")
            || line.starts_with("wasi_tcp_host_guest_info")
        {
            continue;
        }
        for value in line.split('"').skip(1).step_by(2) {
            let identifier =
                value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(identifier && !value.is_empty(), "{value:?} in {line}");
        }
    }
}

/// `guest_info` names the guest new clients get: the new one after a swap,
/// still that one after a swap that failed.
fn the_guest_info_follows_swaps_and_not_failed_ones() {
    let (_dir, file) = installed(&default_guest());
    let (host, _addr, metrics) = observed(&[file.to_str().unwrap()]);
    let name = file.display().to_string();
    let info = |path: &std::path::Path| {
        format!(
            "wasi_tcp_host_guest_info{{guest=\"{name}\",digest=\"sha256:{}\"}}",
            sha256_of(path)
        )
    };
    let first = info(&default_guest());
    assert_eq!(sample(&http_get(metrics, "/metrics").1, &first), Some(1.0));
    let other = test_guest("crash-on-bang");
    crate::support::guests::install(&other, &file);
    host.signal(libc::SIGHUP);
    let text = wait_for_sample(metrics, "wasi_tcp_host_swaps_total{outcome=\"took_over\"}", 1.0);
    assert_eq!(sample(&text, &info(&other)), Some(1.0), "{text}");
    assert_eq!(sample(&text, &first), None, "only the guest that serves: {text}");
    std::fs::write(&file, b"not a component").unwrap();
    host.signal(libc::SIGHUP);
    let text = wait_for_sample(metrics, "wasi_tcp_host_swaps_total{outcome=\"failed\"}", 1.0);
    assert_eq!(sample(&text, &info(&other)), Some(1.0), "{text}");
}

/// `WatchdogSec=`: WATCHDOG=1 comes from the thread that serves the guest
/// itself. While that one thread is stopped (ptrace; the host's other
/// threads run on), none comes, for many times the interval systemd was
/// told; once it runs again, they come again.
#[cfg(target_os = "linux")]
fn the_watchdog_hears_only_from_the_serving_thread() {
    let notify = NotifySocket::new();
    let wait_for_watchdog = || notify.next_where(|message| message == "WATCHDOG=1");
    let socket = &notify.socket;
    let mut cmd = crate::support::host_command();
    // Every 50 ms (half the 100 ms systemd would be told).
    cmd.env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "100000");
    let host = Host::start_command(cmd.args(["--listen", "127.0.0.1:0"]));
    host.listen_addr();
    wait_for_watchdog();
    let pid = libc::pid_t::try_from(host.pid()).unwrap();
    // The main thread (its id is the process's) serves the guest.
    // SAFETY: ptrace on the test's own child; waitpid writes one status.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, libc::__WALL), pid);
        assert!(libc::WIFSTOPPED(status), "{status}");
    }
    let state = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    assert_eq!(state.rsplit_once(") ").unwrap().1.chars().next(), Some('t'), "{state}");
    // What it said before it stopped, then silence: ten intervals.
    socket.set_nonblocking(true).unwrap();
    while socket.recv(&mut [0u8; 4096]).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let heard = socket.recv(&mut [0u8; 4096]);
    // SAFETY: detaching lets the stopped thread run on.
    unsafe { assert_eq!(libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0), 0) };
    assert!(heard.is_err(), "a WATCHDOG=1 came while the serving thread was stopped");
    wait_for_watchdog();
    assert!(echo(&mut connect(host.listen_addr()), b"serving again"), "{}", host.report());
}

/// A log nobody reads (a full pipe) never stalls serving: with --trace, an
/// echo writes several lines; ten thousand echoes go on long after the
/// pipe is full, and the lines that did not fit are counted.
fn a_log_nobody_reads_never_stalls_serving() {
    // stderr: a pipe this test never reads.
    let (_unread, write) = std::io::pipe().unwrap();
    let mut cmd = crate::support::host_command();
    cmd.args(["--listen", "127.0.0.1:0", "--trace", "--metrics", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(write);
    let host = Host::start_command(&mut cmd);
    // The addresses, without reading the log: the guest's listener and the
    // metrics are found where the host listens (its only two listeners).
    let listening = crate::support::listening_ports(host.pid(), 2);
    let mut echoed = 0;
    let mut addr = None;
    for port in &listening {
        let candidate = SocketAddr::from(([127, 0, 0, 1], *port));
        if let Ok(stream) = TcpStream::connect(candidate) {
            let mut client = with_timeouts(stream);
            if echo(&mut client, b"hello") {
                addr = Some((candidate, client));
            }
        }
    }
    let (addr, mut client) = addr.expect("the guest's port");
    for i in 0..10_000 {
        assert!(echo(&mut client, format!("echo {i}").as_bytes()), "stalled after {i} echoes");
        echoed += 1;
    }
    let metrics = listening
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .find(|a| *a != addr)
        .unwrap();
    let text = http_get(metrics, "/metrics").1;
    let dropped = sample(&text, "wasi_tcp_host_log_lines_dropped_total").unwrap_or_default();
    drop(host);
    assert_eq!(echoed, 10_000);
    assert!(dropped > 0.0, "no line was dropped: the pipe never filled?\n{text}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        health_answers_however_many_idle_connections_hold_the_metrics_port,
        a_metrics_port_the_system_picked_is_the_hosts_alone,
        #[cfg(target_os = "linux")]
        a_metrics_listener_that_cannot_accept_backs_off,
        #[cfg(unix)]
        reading_the_policy_again_never_stalls_serving,
        #[cfg(target_os = "linux")]
        a_reload_outcome_cannot_be_redirected_or_forged [needs crate::support::need::root()],
        the_metrics_count_clients_bytes_and_refusals,
        health_and_readiness_follow_the_guest_and_a_graceful_stop,
        a_guest_that_keeps_failing_is_never_ready,
        a_restarted_guest_is_ready_only_once_it_listens_again,
        the_metrics_address_is_the_hosts_alone,
        systemd_hears_ready_reloading_and_stopping,
        #[cfg(target_os = "linux")]
        a_service_manager_that_reads_nothing_stalls_nothing,
        reload_waits_for_the_swap_and_fails_when_it_does,
        #[cfg(target_os = "linux")]
        reload_says_so_when_the_host_ends_before_the_swap,
        sighup_applies_a_changed_policy_and_refuses_what_needs_a_restart,
        under_the_journal_each_line_carries_its_priority,
        a_log_nobody_reads_never_stalls_serving,
        a_fresh_host_shows_every_series_at_zero_its_limits_and_its_guest,
        the_guest_info_follows_swaps_and_not_failed_ones,
        #[cfg(target_os = "linux")]
        the_watchdog_hears_only_from_the_serving_thread,
    ]
}
