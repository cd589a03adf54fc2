//! Running the host and talking to it.

pub mod clients;
pub mod guests;
pub mod harness;
pub mod need;
pub mod traffic;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for something that should happen at once before
/// declaring the test failed. A guard against hangs, not a timing goal.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The `host` binary, with a clean logging configuration. Compiled guests
/// are cached under target/, never in the user's own cache directory.
pub fn host_command() -> Command {
    let mut cmd = Command::new(HOST_BIN);
    prepare(&mut cmd);
    cmd
}

/// The host executable.
pub const HOST_BIN: &str = env!("CARGO_BIN_EXE_wasi-tcp-host");

/// The environment and pipes every host a test starts gets (for a command
/// that runs the host in turn, say through a shell). The host dies with
/// the thread that started it: a test that runs out of time, or a test run
/// that is stopped, leaves no host behind.
pub fn prepare(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("RUST_LOG")
        .env("XDG_CACHE_HOME", concat!(env!("CARGO_TARGET_TMPDIR"), "/cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal.
        unsafe {
            cmd.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
    cmd
}

/// Starts `cmd` with an open-file limit of `n` descriptors.
#[cfg(unix)]
pub fn with_open_file_limit(cmd: &mut Command, n: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's limit.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    }
}

/// Voluntary context switches per thread id.
#[cfg(target_os = "linux")]
pub struct Wakeups(std::collections::HashMap<String, u64>);

#[cfg(target_os = "linux")]
impl Wakeups {
    /// Wake-ups since `earlier`, counting the threads alive at both times.
    pub fn since(&self, earlier: &Wakeups) -> u64 {
        self.0.iter().filter_map(|(tid, now)| Some(now - earlier.0.get(tid)?)).sum()
    }
}

/// A running host, its output collected line by line as it arrives.
pub struct Host {
    child: Child,
    output: Arc<Output>,
    command: String,
    /// Pipes collected (stdout, stderr, or just one).
    pipes: usize,
}

#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Host {
    /// Starts `host` with these arguments.
    pub fn start(args: &[&str]) -> Host {
        Self::start_command(host_command().args(args))
    }

    pub fn start_command(cmd: &mut Command) -> Host {
        assert_hermetic(cmd);
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().expect("the host binary starts");
        let output = Arc::new(Output::default());
        let mut pipes = 0;
        if let Some(stdout) = child.stdout.take() {
            collect(stdout, &output);
            pipes += 1;
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, &output);
            pipes += 1;
        }
        Host { child, output, command, pipes }
    }

    /// Starts a guest (None: the built-in one) on a system-picked loopback
    /// port and returns once the address it listens on is known.
    pub fn serve(guest: Option<&Path>) -> (Host, SocketAddr) {
        let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        args.extend(guest.map(|g| g.display().to_string()));
        let host = Self::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let addr = host.listen_addr();
        (host, addr)
    }

    /// The address from the host's "guest listening on ADDR" log line.
    pub fn listen_addr(&self) -> SocketAddr {
        self.nth_listen_addr(1)
    }

    /// The same, from the n-th such line (a restarted guest listens again).
    pub fn nth_listen_addr(&self, n: usize) -> SocketAddr {
        let line = self.wait_for_nth("guest listening on ", n);
        let addr = line.rsplit(' ').next().unwrap();
        addr.parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    /// The address from the n-th "per-client: listening on ADDR" line
    /// (`--per-client`: the host listens itself).
    pub fn per_client_addr(&self, n: usize) -> SocketAddr {
        let line = self.wait_for_nth("per-client: listening on ", n);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// The same, from `--log-format json` output.
    pub fn listen_addr_json(&self) -> SocketAddr {
        let line = self.wait_for("\"event\":\"listen\"");
        let start = line.find("\"addr\":\"").unwrap() + 8;
        let end = start + line[start..].find('"').unwrap();
        line[start..end].parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    #[cfg(target_os = "linux")]
    /// Whether the host process has exited (it is a zombie, not waited
    /// for yet, or gone).
    pub fn has_exited(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()));
        stat.map_or(true, |stat| stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'))
    }

    #[cfg(target_os = "linux")]
    /// The CPU time the host process has used so far (user and system),
    /// from /proc, in clock ticks (10 ms on Linux).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    #[cfg(target_os = "linux")]
    /// How many times each of the host's threads has gone to sleep so far
    /// (voluntary context switches, from /proc): each is a wake-up.
    pub fn wakeups(&self) -> Wakeups {
        let per_thread = self
            .threads()
            .filter_map(|task| {
                let status = std::fs::read_to_string(task.join("status")).ok()?;
                let count = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"));
                Some((task.file_name()?.to_str()?.to_string(), count?.trim().parse().ok()?))
            })
            .collect();
        Wakeups(per_thread)
    }

    #[cfg(target_os = "linux")]
    /// The host's threads: their /proc/PID/task/TID directories.
    fn threads(&self) -> impl Iterator<Item = std::path::PathBuf> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks.flatten().map(|task| task.path())
    }

    #[cfg(target_os = "linux")]
    /// Waits until the host is idle: its epoch ticker thread parked (waiting
    /// on a futex, not in its 10 ms sleep), which it does only while the
    /// async runtime waits too, and its writers (of the log and of the
    /// guests' stdout) waiting for lines, not writing one.
    pub fn wait_until_idle(&self) {
        harness::waiting_for(|| "the host to go idle".to_string());
        let deadline = Instant::now() + PATIENCE;
        let read =
            |task: &Path, file: &str| std::fs::read_to_string(task.join(file)).unwrap_or_default();
        loop {
            let waiting = |name: &str| {
                self.threads().any(|task| {
                    read(&task, "comm").trim() == name && read(&task, "wchan").contains("futex")
                })
            };
            if ["epoch-ticker", "log-writer", "stdout-writer"].into_iter().all(waiting) {
                return;
            }
            assert!(Instant::now() < deadline, "the host never went idle\n{}", self.report());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the log accounts for `total` events of one kind: the
    /// lines containing `line`, plus the counts of the summaries the log's
    /// rate limit writes for the rest ("... and N more KIND in the last
    /// second"). Returns how many lines were written (not summarised).
    pub fn wait_for_total(&self, line: &str, kind: &str, total: usize) -> usize {
        harness::waiting_for(|| format!("the log to account for {total} {kind}"));
        let deadline = Instant::now() + PATIENCE;
        let summary = format!(" more {kind} in the last second");
        loop {
            let (written, summarised) = self.log_total(line, &summary);
            if written + summarised == total {
                return written;
            }
            assert!(
                written + summarised < total && Instant::now() < deadline,
                "the log accounts for {written} + {summarised} of {total} {kind}\n{}",
                self.report()
            );
            let lines = self.output.lines.lock().unwrap();
            drop(self.output.changed.wait_timeout(lines, Duration::from_millis(100)).unwrap());
        }
    }

    /// Lines containing `line`, and the sum of the counts in lines that
    /// end with `summary`.
    fn log_total(&self, line: &str, summary: &str) -> (usize, usize) {
        let lines = self.output.lines.lock().unwrap();
        let written = lines.iter().filter(|l| l.contains(line)).count();
        let summarised = lines
            .iter()
            .filter_map(|l| l.strip_suffix(summary)?.rsplit(' ').next()?.parse::<usize>().ok())
            .sum();
        (written, summarised)
    }

    #[cfg(target_os = "linux")]
    /// How many sockets the host process has open now (from /proc).
    pub fn open_sockets(&self) -> usize {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap();
        fds.flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count()
    }

    #[cfg(target_os = "linux")]
    /// Waits until the host has `n` sockets open.
    pub fn wait_for_open_sockets(&self, n: usize) {
        harness::waiting_for(|| format!("the host to have {n} sockets open"));
        let deadline = Instant::now() + PATIENCE;
        while self.open_sockets() != n {
            assert!(
                Instant::now() < deadline,
                "the host has {} sockets open, not {n}\n{}",
                self.open_sockets(),
                self.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[cfg(target_os = "linux")]
    /// A figure from /proc/PID/status, in bytes (`VmRSS`, `VmHWM`, ...).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Waits until a line containing `needle` has been printed; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// Waits until `n` lines containing `needle` have been printed; returns the last.
    pub fn wait_for_nth(&self, needle: &str, n: usize) -> String {
        harness::waiting_for(|| format!("the host to print {needle:?} (x{n})"));
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.output.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Every pipe closed: nothing more will come.
            let ended = lines.iter().filter(|l| *l == EOF_MARK).count() == self.pipes;
            if left.is_zero() || (ended && needle != EOF_MARK) {
                drop(lines);
                panic!("never saw {needle:?} (x{n})\n{}", self.report());
            }
            lines = self.output.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Every line the host has logged so far is collected: it is asked for
    /// a status line (SIGUSR1), which its log writes after them (one queue,
    /// in order); returns once that line is here. Before a test checks that
    /// a log line is absent. (The guest's stdout is another pipe, with no
    /// such order.)
    #[cfg(unix)]
    pub fn settled(&self) {
        let seen = self.output.lines.lock().unwrap().iter().filter(|l| l.contains(STATUS)).count();
        self.signal(libc::SIGUSR1);
        self.wait_for_nth(STATUS, seen + 1);
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lines.lock().unwrap().join("\n")
    }

    /// The command and its output, for failure messages.
    pub fn report(&self) -> String {
        format!("command: {}\n--- output ---\n{}\n---", self.command, self.output())
    }

    /// Runs `while_stopped` with the host stopped (SIGSTOP, then SIGCONT):
    /// the system still completes connections to its listener, but the
    /// guest accepts none of them until it runs again. So a client can be
    /// made to reset before the guest accepts it, every time.
    pub fn stopped_while<T>(&self, while_stopped: impl FnOnce() -> T) -> T {
        self.signal(libc::SIGSTOP);
        let result = while_stopped();
        self.signal(libc::SIGCONT);
        result
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }

    /// Waits for the host to exit, and for its output to be complete.
    pub fn wait(mut self) -> (ExitStatus, String) {
        harness::waiting_for(|| format!("the host to exit: {}", self.command));
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.wait_for_eof();
                return (status, self.output());
            }
            if Instant::now() > deadline {
                panic!("the host did not exit\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every output pipe closed (the collectors push a marker at EOF).
    fn wait_for_eof(&self) {
        if self.pipes == 0 {
            return;
        }
        self.wait_for_nth(EOF_MARK, self.pipes);
        self.output.lines.lock().unwrap().retain(|l| l != EOF_MARK);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const EOF_MARK: &str = "\u{0}<eof>";

/// The start of the host's status line (SIGUSR1).
const STATUS: &str = "status: ";

/// Collects a pipe's lines (bytes that are not UTF-8 replaced, so that a
/// line of them ends nothing) until its end.
fn collect(pipe: impl Read + Send + 'static, output: &Arc<Output>) {
    let output = Arc::clone(output);
    std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            output.lines.lock().unwrap().push(text.trim_end_matches(['\n', '\r']).to_string());
            output.changed.notify_all();
            line.clear();
        }
        output.lines.lock().unwrap().push(EOF_MARK.to_string());
        output.changed.notify_all();
    });
}

/// A host a test starts listens where the test said: on a port the system
/// picks (`--listen 127.0.0.1:0`), a port the test holds, nowhere
/// (`--no-listen`), or a socket it hands over; never on the default,
/// 0.0.0.0:9000, which another program (or test) may hold. (The test of
/// that default runs the host in a network namespace of its own.)
fn assert_hermetic(cmd: &Command) {
    if cmd.get_program() != HOST_BIN {
        return;
    }
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().to_string()).collect();
    let subcommand =
        args.first().is_some_and(|a| ["inspect", "reload", "upgrade"].contains(&a.as_str()));
    let told = args.iter().any(|a| ["--listen", "--no-listen", "--policy"].contains(&a.as_str()));
    let handed = cmd.get_envs().any(|(key, _)| key == "LISTEN_FDS");
    assert!(
        subcommand || told || handed,
        "a test started the host without --listen (it would bind 0.0.0.0:9000): {cmd:?}"
    );
}

/// `cmd` (a host command) run in a network namespace of its own, with
/// its loopback up: it may take any port there (root, `unshare`).
#[cfg(target_os = "linux")]
pub fn in_own_network(cmd: Command) -> Command {
    let mut wrapped = Command::new("unshare");
    prepare(&mut wrapped);
    wrapped.args(["--net", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]);
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Runs `client` on a thread that has joined `host`'s network namespace.
#[cfg(target_os = "linux")]
pub fn in_network_of<T: Send>(host: &Host, client: impl FnOnce() -> T + Send) -> T {
    let namespace = std::fs::File::open(format!("/proc/{}/ns/net", host.pid())).unwrap();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns moves only this thread into the namespace.
                let joined = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                client()
            })
            .join()
            .unwrap()
    })
}

/// Connects, retrying while the listener is not up yet (readiness by
/// connecting: the host logs the address just before the guest listens).
/// The client gives up reading or writing after PATIENCE.
pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_unless_reset(addr)
        .unwrap_or_else(|()| panic!("cannot connect to {addr}: reset as it connected"))
}

/// The same, for a client the host may turn away: Err if it was reset
/// before connect() returned (the reset can beat this thread to the
/// connection's end on a busy machine).
pub fn connect_unless_reset(addr: SocketAddr) -> Result<TcpStream, ()> {
    harness::waiting_for(|| format!("a connection to {addr}"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect_timeout(&addr, PATIENCE) {
            Ok(stream) => return Ok(with_timeouts(stream)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }
}

/// A loopback address no other test will take while this is alive: a
/// socket the system picked a port for, bound there with SO_REUSEADDR and
/// never listening, so that the host (which binds with SO_REUSEADDR too)
/// can bind and listen there, and nothing else can. (Binding port 0,
/// closing, and passing the number on would leave the port to whoever
/// asks next.)
pub struct Reserved {
    _holder: socket2::Socket,
    pub addr: SocketAddr,
}

pub fn reserved_addr() -> Reserved {
    use socket2::{Domain, Socket, Type};
    let holder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    holder.set_reuse_address(true).unwrap();
    holder.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = holder.local_addr().unwrap().as_socket().unwrap();
    Reserved { _holder: holder, addr }
}

/// `GET path` over HTTP/1.1 (one request, then the connection closes):
/// the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    harness::waiting_for(|| format!("an answer to GET {path} from {addr}"));
    let mut stream = connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_string())
}

/// The value of one sample in a Prometheus exposition (`name` or
/// `name{labels}` exactly as written).
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

impl Host {
    /// The address the host serves metrics on, from its log.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self.wait_for("serving metrics and health on http://");
        line.rsplit("http://").next().unwrap().parse().unwrap()
    }
}

/// `wasi-tcp-host VERB PID` (`reload` or `upgrade`), told the host's
/// RUNTIME_DIRECTORY: whether it succeeded, and what it said.
#[cfg(unix)]
pub fn ask_host(verb: &str, runtime: &Path, host: &Host) -> (bool, String) {
    harness::waiting_for(|| format!("wasi-tcp-host {verb}"));
    let out = Command::new(HOST_BIN)
        .env("RUNTIME_DIRECTORY", runtime)
        .args([verb, &host.pid().to_string()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A client connected from `ip` (another loopback address, say).
pub fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    crate::support::with_timeouts(socket.into())
}

/// A client that gives up reading or writing after PATIENCE.
pub fn with_timeouts(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `data` from a second thread while reading the echo here, so that
/// neither side's buffers can fill up and deadlock; then half-closes and
/// checks that exactly `data` came back, then end of stream.
pub fn assert_echoes(addr: SocketAddr, data: &[u8]) {
    let stream = connect(addr);
    assert_echoes_on(stream, data, &[data.len()]);
}

/// Like [`assert_echoes`], on a connected stream, writing `data` in pieces
/// of the given sizes (cycled).
pub fn assert_echoes_on(mut stream: TcpStream, data: &[u8], pieces: &[usize]) {
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let (owned, pieces) = (data.to_vec(), pieces.to_vec());
    let sender = std::thread::spawn(move || {
        let mut rest = &owned[..];
        for size in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).clamp(1, rest.len()));
            writer.write_all(piece).unwrap();
            rest = tail;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::with_capacity(data.len());
    stream.read_to_end(&mut echoed).expect("reading the echo until end of stream");
    sender.join().unwrap();
    assert_eq!(echoed.len(), data.len(), "echoed length");
    assert!(echoed == data, "the echo differs from what was sent");
}

/// Deterministic pseudo-random bytes (every value, NUL included).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The first socket of the host process that `is_it` picks, copied out of
/// it (`pidfd_getfd`: the tests run as the host's parent, with the right
/// to; tests that use this need `need::pidfd_getfd()`), to read its
/// options as the kernel has them.
#[cfg(target_os = "linux")]
pub fn host_socket(
    host: &Host,
    is_it: impl Fn(&socket2::SockRef) -> bool,
) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, RawFd};
    let pidfd = pidfd_syscall(libc::SYS_pidfd_open, host.pid() as RawFd, 0)
        .unwrap_or_else(|e| panic!("pidfd_open: {e}"));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", host.pid())).unwrap();
    fds.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter_map(|fd| match pidfd_syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd) {
            Ok(copy) => Some(copy),
            // Closed since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => None,
            Err(e) => panic!("pidfd_getfd (copying the host's descriptor {fd}): {e}"),
        })
        .find(|fd| is_it(&socket2::SockRef::from(fd)))
}

/// `pidfd_open(pid, 0)` or `pidfd_getfd(pidfd, fd, 0)`: a new descriptor.
#[cfg(target_os = "linux")]
fn pidfd_syscall(
    number: libc::c_long,
    a: std::os::fd::RawFd,
    b: std::os::fd::RawFd,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: both calls take two integers and a zero flag, and return a
    // new descriptor that nothing else owns, or -1.
    let fd = unsafe { libc::syscall(number, a, b, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) })
}

/// The TCP ports process `pid` listens on (from /proc/net/tcp), once there
/// are `n` of them.
#[cfg(target_os = "linux")]
pub fn listening_ports(pid: u32, n: usize) -> Vec<u16> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter_map(|l| {
                        l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let ports: Vec<u16> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let listening = fields.get(3) == Some(&"0A")
                    && inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9));
                let port = fields.get(1)?.rsplit(':').next()?;
                listening.then(|| u16::from_str_radix(port, 16).ok()).flatten()
            })
            .collect();
        if ports.len() >= n {
            return ports;
        }
        assert!(Instant::now() < deadline, "the host never listened on {n} ports: {ports:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
