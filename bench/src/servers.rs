//! Starting the servers under test, and reading their memory use.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The native baseline, tokio's echo: every ratio is to it.
pub const NATIVE: &str = "native tokio";
/// The native baseline with Nagle on: measured under load only.
pub const NATIVE_NAGLE: &str = "native, Nagle on";
/// Another build of the host, for paired runs (`--baseline-host`).
pub const BASELINE: &str = "host (baseline)";

/// One kind of echo server.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: &'static str,
    program: PathBuf,
    /// "{addr}" in an argument becomes the listen address.
    args: Vec<String>,
}

impl Server {
    /// tokio's echo, built in this workspace.
    pub fn native(bin_dir: &Path) -> Server {
        Server { name: NATIVE, program: bin_dir.join("native-echo"), args: vec!["{addr}".into()] }
    }

    /// The same with Nagle's algorithm left on: the system's default, for
    /// comparison (the ratios use the one with TCP_NODELAY, as the host
    /// sets it for its guest).
    pub fn native_nagle(bin_dir: &Path) -> Server {
        Server {
            name: NATIVE_NAGLE,
            program: bin_dir.join("native-echo"),
            args: vec!["{addr}".into(), "--nagle".into()],
        }
    }

    /// This project's host with its embedded, precompiled default guest.
    pub fn host(bin_dir: &Path) -> Server {
        Server::host_at(&bin_dir.join("wasi-tcp-host"), "host")
    }

    /// A host executable at `program`, shown as `name`.
    pub fn host_at(program: &Path, name: &'static str) -> Server {
        Server {
            name,
            program: program.to_path_buf(),
            // Room for the many-connections test: the defaults (1024
            // sockets, 128 MiB) suit a small server, not 10 000 clients.
            args: ["--max-connections", "16000", "--max-memory", "1GiB", "--listen", "{addr}"]
                .map(Into::into)
                .to_vec(),
        }
    }

    /// Any server: `program` with `args` ("{addr}" the listen address).
    pub fn custom(name: &'static str, program: &Path, args: Vec<String>) -> Server {
        Server { name, program: program.to_path_buf(), args }
    }

    /// A process per connection: systemd-socket-activate accepting each
    /// client and running `cat` with the connection as stdin and stdout
    /// (inetd's way), if installed.
    pub fn inetd_cat(name: &'static str) -> Option<Server> {
        let found = Command::new("systemd-socket-activate").arg("--version").output().ok()?;
        if !found.status.success() {
            return None;
        }
        let args = ["--accept", "--inetd", "-l", "{addr}", "cat"].map(Into::into).to_vec();
        Some(Server { name, program: "systemd-socket-activate".into(), args })
    }

    /// The official wasmtime CLI running the same guest, if installed.
    pub fn wasmtime_cli(guest: &Path) -> Option<Server> {
        let found = Command::new("wasmtime").arg("--version").output().ok()?;
        if !found.status.success() {
            return None;
        }
        Some(Server {
            name: "wasmtime CLI",
            program: "wasmtime".into(),
            args: vec![
                "run".into(),
                "-S".into(),
                "inherit-network".into(),
                "--env".into(),
                "LISTEN_ADDR={addr}".into(),
                guest.display().to_string(),
            ],
        })
    }

    pub fn check(&self) -> Result<()> {
        if self.program.components().count() > 1 && !self.program.exists() {
            bail!(
                "{} is missing; build it first: cargo build --release -p host -p bench",
                self.program.display()
            );
        }
        Ok(())
    }

    /// Starts it on a free loopback port; returns once it echoes.
    pub fn start(&self) -> Result<Running> {
        self.start_with_args(&[])
    }

    /// The same, with more arguments at the end.
    pub fn start_with_args(&self, extra: &[&str]) -> Result<Running> {
        let running = self.spawn(extra)?;
        first_echo(running.addr).with_context(|| format!("{} did not start echoing", self.name))?;
        Ok(running)
    }

    /// Time from exec to the first byte echoed back, on a fresh process.
    pub fn time_to_first_echo(&self) -> Result<Duration> {
        let started = Instant::now();
        let running = self.spawn(&[])?;
        first_echo(running.addr)?;
        Ok(started.elapsed())
    }

    fn spawn(&self, extra: &[&str]) -> Result<Running> {
        self.spawn_with_stdout(extra, Stdio::null())
    }

    /// Starts it on a free loopback port with its standard output piped to
    /// the caller (`Running::stdout`), without waiting for anything: for a
    /// guest that is no echo server (`floor.rs`).
    pub fn spawn_piped(&self, extra: &[&str]) -> Result<Running> {
        self.spawn_with_stdout(extra, Stdio::piped())
    }

    fn spawn_with_stdout(&self, extra: &[&str], stdout: Stdio) -> Result<Running> {
        let addr = free_port()?;
        let mut command = Command::new(&self.program);
        command
            .args(self.args.iter().map(|a| a.replace("{addr}", &addr.to_string())))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null());
        crate::pin::server(&mut command);
        let child =
            command.spawn().with_context(|| format!("starting {}", self.program.display()))?;
        Ok(Running { child, addr })
    }
}

/// A started server; killed when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
}

impl Running {
    /// Its standard output, once, if it was started with `spawn_piped`.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    }
}

/// CPU time a process has used, in user space and in the kernel.
#[derive(Clone, Copy)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu { user: self.user - earlier.user, system: self.system - earlier.system }
    }
}

impl Running {
    /// The CPU time the server process has used so far, with that of the
    /// children it has waited for (a process per connection).
    pub fn cpu(&self) -> Result<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> =
            stat.rsplit_once(')').context("bad stat")?.1.split_whitespace().collect();
        // SAFETY: sysconf has no memory effects.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let time = |field: &str| -> Result<Duration> {
            Ok(Duration::from_millis(field.parse::<u64>()? * 1000 / per_second))
        };
        let (user, system) =
            (time(fields[11])? + time(fields[13])?, time(fields[12])? + time(fields[14])?);
        Ok(Cpu { user, system })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Connects (retrying while refused), sends one byte, waits for it back.
fn first_echo(addr: SocketAddr) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e)
                if Instant::now() < deadline
                    && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nodelay(true)?;
    stream.write_all(b"!")?;
    let mut byte = [0u8];
    stream.read_exact(&mut byte)?;
    if byte != *b"!" {
        bail!("echoed {byte:?} instead of `!`");
    }
    Ok(())
}
