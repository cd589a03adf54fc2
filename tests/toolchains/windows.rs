//! The host built for Windows (`cargo build -p host --target
//! x86_64-pc-windows-gnu`), run under Wine on this Linux machine, its
//! clients on Linux: the same echo, sandbox, restart, client filter,
//! lesson guests and `--watch` as on Linux, and the Windows ways to stop.
//!
//! Wine is not Windows: these tests show that the build loads, serves and
//! behaves; they measure nothing. Two pieces of scaffolding, never
//! shipped: Rust's standard library needs `ProcessPrng` from
//! `bcryptprimitives.dll`, which Windows has and Wine 8 has not, so a DLL
//! of a few lines (`tests/windows/processprng.c`) is built next to the
//! .exe; and a console event is sent the way Wine turns a Unix signal
//! into one (SIGINT is Wine's Ctrl-C: it runs the program's console
//! control handlers with CTRL_C_EVENT, as pressing the keys does).

use crate::support::clients::assert_reset;
use crate::support::guests::{default_guest, install, installed, test_guest};
use crate::support::{assert_echoes, connect_unless_reset, prepare, Host};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The Windows host, if it was built (release or dev).
pub fn windows_host() -> Option<PathBuf> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-pc-windows-gnu");
    ["release", "debug"]
        .map(|profile| target.join(profile).join("wasi-tcp-host.exe"))
        .into_iter()
        .find(|p| p.exists())
}

/// Wine's 64-bit loader: WINE64, else where Debian puts it, else PATH.
pub fn wine64() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/lib/wine/wine64");
    std::env::var_os("WINE64")
        .map(PathBuf::from)
        .or(debian.is_file().then_some(debian))
        .or_else(|| crate::support::need::on_path("wine64"))
}

/// What every test runs: the .exe beside its Wine-only DLL, and a Wine
/// prefix of the tests' own.
struct Prepared {
    wine64: PathBuf,
    exe: PathBuf,
    prefix: PathBuf,
    cache: PathBuf,
}

fn prepared(wine64: &Path, host: &Path, gcc: &Path) -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("windows");
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("wasi-tcp-host.exe");
        let _ = std::fs::remove_file(&exe);
        std::fs::hard_link(host, &exe).or_else(|_| std::fs::copy(host, &exe).map(drop)).unwrap();
        let source =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/windows/processprng.c");
        let status = Command::new(gcc)
            .args(["-shared", "-O2", "-o"])
            .arg(dir.join("bcryptprimitives.dll"))
            .arg(source)
            .arg("-ladvapi32")
            .status()
            .unwrap();
        assert!(status.success(), "building the ProcessPrng DLL failed");
        let prepared = Prepared {
            wine64: wine64.to_path_buf(),
            exe,
            prefix: tmp.join("wineprefix"),
            cache: tmp.join("windows-cache"),
        };
        // Wine's server, persistent for five minutes after the last
        // program ends, and the services the first program starts, with
        // no pipes of the tests': started otherwise by a host under test,
        // they would hold its stdout and stderr open after it exits. The
        // first start also creates the prefix (10 to 20 seconds).
        let quietly = |cmd: &mut Command| {
            cmd.env("WINEPREFIX", &prepared.prefix).env("WINEDEBUG", "-all");
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            cmd.status().unwrap().success()
        };
        let server = wine64.with_file_name("wineserver");
        // (It fails if one runs already for this prefix: that one will do.)
        quietly(Command::new(server).arg("-p300"));
        let version = quietly(Command::new(wine64).arg(&prepared.exe).arg("--version"));
        assert!(version, "the Windows host does not start under Wine");
        prepared
    })
}

impl Prepared {
    /// `wasi-tcp-host.exe` under Wine, with the test pipes.
    fn command(&self) -> Command {
        self.wine(&self.exe)
    }

    /// A Windows program under Wine, in the tests' prefix, with the test pipes.
    fn wine(&self, program: &Path) -> Command {
        let mut cmd = Command::new(&self.wine64);
        prepare(&mut cmd).arg(program).env("WINEPREFIX", &self.prefix).env("WINEDEBUG", "-all");
        cmd
    }

    /// The host with `args`; compiled guests go to the tests' own cache.
    fn start(&self, args: &[&str]) -> Host {
        let cache = self.cache.to_str().unwrap();
        Host::start_command(self.command().args(["--cache-dir", cache]).args(args))
    }
}

pub type Needs<'a> = (&'a Path, &'a Path, &'a Path);

fn host((wine64, exe, gcc): Needs<'_>) -> &'static Prepared {
    prepared(wine64, exe, gcc)
}

/// The built-in guest passes every traffic check of the Linux host (1
/// byte to 1 MiB, pieces, pipelining, half-close, resets): Windows' async
/// runtime polls sockets its own way; Ctrl-C stops the host, which exits 0.
pub fn the_built_in_guest_echoes_and_ctrl_c_stops_it(needs: Needs<'_>) {
    let host = host(needs).start(&["--listen", "127.0.0.1:0"]);
    crate::support::traffic::every_traffic_shape(host.listen_addr());
    assert_echoes(host.listen_addr(), b"hello from Linux to Windows");
    host.wait_for("[TCP server] client disconnected");
    host.signal(libc::SIGINT);
    let (status, output) = host.wait();
    assert!(status.success(), "{status}\n{output}");
    assert!(output.contains("INFO Ctrl-C received: stopping the guest"), "{output}");
}

/// A guest from a file: compiled once into %LOCALAPPDATA%\wasi-tcp-host (in
/// the Wine prefix's user profile), then loaded from there.
pub fn a_guest_file_is_cached_under_localappdata(needs: Needs<'_>) {
    let prepared = host(needs);
    let users = prepared.prefix.join("drive_c/users");
    let caches = || -> Vec<PathBuf> {
        let users = std::fs::read_dir(&users).unwrap().flatten();
        users.map(|u| u.path().join("AppData/Local/wasi-tcp-host")).filter(|d| d.is_dir()).collect()
    };
    caches().into_iter().for_each(|dir| std::fs::remove_dir_all(dir).unwrap());
    let guest = default_guest();
    let args = ["--listen", "127.0.0.1:0", guest.to_str().unwrap()];
    for (run, says) in [(1, "for the next start"), (2, "compiled earlier")] {
        let host = Host::start_command(prepared.command().args(args));
        assert_echoes(host.listen_addr(), b"from a file");
        let line = host.wait_for(says);
        assert!(line.contains(r"AppData\Local\wasi-tcp-host"), "run {run}: {line}");
    }
    let cached: Vec<_> = caches().iter().flat_map(|d| std::fs::read_dir(d).unwrap()).collect();
    assert_eq!(cached.len(), 1, "one compiled guest in %LOCALAPPDATA%\\wasi-tcp-host");
}

/// The sandbox: a bind without --listen and a connect without
/// --allow-connect are denied, each with its log line; with the grant,
/// the lesson's step-3 client talks to its step-1 server, traced.
pub fn denied_bind_and_connect_and_the_lessons_step_1_and_3(needs: Needs<'_>) {
    let prepared = host(needs);
    let (status, output) = prepared.start(&["--no-listen"]).wait();
    assert!(!status.success(), "{output}");
    let denied = "WARN denied: TCP bind to 0.0.0.0:9000 (no listen address is granted; grant it with --listen 0.0.0.0:9000)";
    assert!(output.contains(denied), "{output}");
    assert!(output.contains("[TCP server] bind() failed: access-denied"), "{output}");

    let step1 = test_guest("guest_iterative");
    let server = prepared.start(&["--listen", "127.0.0.1:0", step1.to_str().unwrap()]);
    let addr = server.listen_addr();
    assert_echoes(addr, b"step 1 on Windows");

    let client = test_guest("echo_client");
    let env = format!("SERVER_ADDR={addr}");
    let run_client = |extra: &[&str]| {
        let mut args = vec!["--no-listen", "--env", &env];
        args.extend(extra);
        args.extend([client.to_str().unwrap(), "--", "hello", "a longer message"]);
        prepared.start(&args).wait()
    };
    let (status, output) = run_client(&[]);
    assert!(!status.success(), "{output}");
    assert!(output.contains(&format!("WARN denied: TCP connect to {addr}")), "{output}");
    assert!(output.contains("[TCP client] connect() failed: access-denied"), "{output}");

    let grant = addr.to_string();
    let (status, output) = run_client(&["--allow-connect", &grant, "--trace"]);
    assert!(status.success(), "{output}");
    for line in [
        format!("trace: connect({addr})"),
        format!("tcp-socket.start-connect({addr}) -> ok [policy: allowed]"),
        "[TCP client] received 5 bytes: hello".to_string(),
        "[TCP client] received 16 bytes: a longer message".to_string(),
    ] {
        assert!(output.contains(&line), "{line:?} missing\n{output}");
    }
}

/// --restart on-failure: a client's `!` makes the guest panic (a trap);
/// the host starts it again, and it serves.
pub fn restart_on_failure_brings_a_crashing_guest_back(needs: Needs<'_>) {
    let guest = test_guest("crash-on-bang");
    let host = host(needs).start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart",
        "on-failure",
        guest.to_str().unwrap(),
    ]);
    assert_echoes(host.listen_addr(), b"hello");
    let mut bad = crate::support::connect(host.listen_addr());
    bad.write_all(b"!").unwrap();
    let restart = host.wait_for("the guest failed: the guest trapped");
    assert!(restart.ends_with("; restarting it in 100ms"), "{restart}");
    drop(bad);
    assert_echoes(host.nth_listen_addr(2), b"served again");
}

/// --allow-client: a client from elsewhere is reset, never reaches the
/// guest, and is logged.
pub fn clients_outside_allow_client_are_reset(needs: Needs<'_>) {
    let host = host(needs).start(&["--listen", "127.0.0.1:0", "--allow-client", "10.0.0.0/8"]);
    let client = connect_unless_reset(host.listen_addr());
    host.wait_for("denied: TCP client from 127.0.0.1");
    if let Ok(mut client) = client {
        assert_reset(&mut client);
    }
    assert!(!host.output().contains("client connected"), "{}", host.report());
}

/// --watch, the swap Windows has: a file renamed over the guest's is
/// swapped in; one written in place is waited for until whole.
pub fn watch_swaps_the_guest_and_waits_for_a_whole_file(needs: Needs<'_>) {
    let (_dir, file) = installed(&default_guest());
    let host = host(needs).start(&["--listen", "127.0.0.1:0", "--watch", file.to_str().unwrap()]);
    let addr = host.listen_addr();
    host.wait_for("replacing it swaps the guest");

    install(&test_guest("guest_iterative"), &file);
    host.wait_for("swap: the new guest instance #2 listens on");
    assert_echoes(addr, b"the second guest");

    let third = std::fs::read(default_guest()).unwrap();
    let (first, rest) = third.split_at(third.len() / 2);
    let mut writing = std::fs::File::create(&file).unwrap();
    writing.write_all(first).unwrap();
    writing.flush().unwrap();
    host.wait_for("changed, but is not a whole component yet");
    assert_eq!(host.output().matches("again, to swap it in").count(), 1, "{}", host.report());
    writing.write_all(rest).unwrap();
    drop(writing);
    host.wait_for("swap: the new guest instance #3 listens on");
    assert_echoes(addr, b"the third guest");
    assert!(!host.output().contains("swap failed"), "{}", host.report());
}

/// Socket activation is Unix's: LISTEN_FDS on Windows is one clear line.
pub fn listen_fds_is_refused_in_one_line(needs: Needs<'_>) {
    let prepared = host(needs);
    let mut cmd = prepared.command();
    cmd.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("error: LISTEN_FDS is set, but socket activation is a Unix protocol"),
        "{output}"
    );
}

/// `reload PID` sends SIGHUP, which Windows has not: one line, pointing
/// to `--watch`.
pub fn reload_points_to_watch(needs: Needs<'_>) {
    let mut cmd = host(needs).command();
    let (status, output) = Host::start_command(cmd.args(["reload", "1234"])).wait();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(
            "error: `reload` sends SIGHUP, which Windows does not have: run the host with --watch \
             instead"
        ),
        "{output}"
    );
}

/// SO_EXCLUSIVEADDRUSE: a second host on the same port is refused at
/// start, in one line, and the first one serves on.
pub fn a_second_host_on_the_same_port_is_refused(needs: Needs<'_>) {
    let prepared = host(needs);
    let first = prepared.start(&["--listen", "127.0.0.1:0"]);
    let addr = first.listen_addr();
    let (status, output) = prepared.start(&["--listen", &addr.to_string()]).wait();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(&format!("cannot listen on {addr}: the address is already in use")),
        "{output}"
    );
    assert_echoes(addr, b"the first host serves on");
}

/// The lesson's C server (`guests/lesson/winsock/echo_server.c`): chapter
/// 1 quotes it as it is (but for the one correction it names, `continue`
/// where the study notes `break` after a failed accept), it compiles with
/// MinGW as its header says, without a warning, and, run under Wine, it
/// echoes on port 9000.
pub fn the_study_notes_server_in_c_compiles_and_echoes((wine64, exe, gcc): Needs<'_>) {
    let prepared = prepared(wine64, exe, gcc);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = std::fs::read_to_string(root.join("guests/lesson/winsock/echo_server.c")).unwrap();
    let code = without_comments(&source);
    let code: Vec<&str> = code.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    for doc in ["docs/lesson.md", "docs/lesson.ko.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let chapter = &text[text.find("## 1. ").unwrap()..text.find("## 2. ").unwrap()];
        for block in chapter.split("```c\n").skip(1) {
            let block = &block[..block.find("```").unwrap()];
            let block = match block.contains("accept(") {
                true => block.replace("break;", "continue;"),
                false => block.to_string(),
            };
            let lines: Vec<&str> = block.lines().map(str::trim).collect();
            let quoted = code.windows(lines.len()).any(|w| w == lines.as_slice());
            assert!(quoted, "{doc}: not in echo_server.c as quoted:\n{block}");
        }
    }

    let server = prepared.exe.with_file_name("echo_server.exe");
    let out = Command::new(gcc)
        .args(["-Wall", "-o"])
        .arg(&server)
        .arg(root.join("guests/lesson/winsock/echo_server.c"))
        .arg("-lws2_32")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    let host = Host::start_command(&mut prepared.wine(&server));
    host.wait_for("[TCP server] listening on port 9000");
    assert_echoes("127.0.0.1:9000".parse().unwrap(), b"hello, WinSock");
    host.wait_for("[TCP server] client disconnected: IP address=127.0.0.1");
}

/// C source without its `/* ... */` comments.
fn without_comments(source: &str) -> String {
    let mut rest = source;
    let mut code = String::new();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = &rest[start + rest[start..].find("*/").unwrap() + 2..];
    }
    code + rest
}
