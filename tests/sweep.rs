//! The ledger's sweep: every hostile test guest, each against a host
//! started with a low open-file limit (256) and small limits, watched the
//! whole time it runs. The host announces its totals at start (`ledger:
//! this policy can hold at most X MiB and N descriptors`); whatever the
//! guest does, the host never holds more descriptors than N, its memory
//! never grows past X beyond what the same host holds serving the
//! built-in guest, and its own well-behaved client (a health probe) is
//! served throughout. With `--per-client`, hostile clients (a trap, a
//! memory bomb, a spin, floods to clients that never read) run beside a
//! well-behaved one, which is echoed throughout.

use crate::support::clients::echo;
use crate::support::guests::test_guest;
use crate::support::{connect, host_command, with_open_file_limit, Host};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The open-file limit every host of the sweep runs under.
const OPEN_FILES: u64 = 256;
/// How long each hostile guest is watched, at most.
const WATCHED: Duration = Duration::from_secs(4);

/// The limits every host of the sweep runs with.
fn limits(dir: &std::path::Path) -> Vec<String> {
    let grant = format!("{}::/data:rw", dir.display());
    [
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--max-memory",
        "16MiB",
        "--max-connections",
        "64",
        "--max-files",
        "16",
        "--cpu-budget",
        "2s",
        "--dir",
        &grant,
    ]
    .map(String::from)
    .to_vec()
}

/// A host of the sweep running `guest` with `args` (the built-in guest
/// for None).
fn sweep_host(guest: Option<&str>, args: &[&str], extra: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = host_command();
    cmd.args(limits(dir.path())).args(extra);
    if let Some(guest) = guest {
        cmd.arg(test_guest(guest)).arg("--").args(args);
    }
    with_open_file_limit(&mut cmd, OPEN_FILES);
    (Host::start_command(&mut cmd), dir)
}

/// The totals the host announced: bytes and descriptors.
fn announced(host: &Host) -> (u64, usize) {
    let line = host.wait_for("ledger: this policy can hold at most ");
    let rest = line.split("at most ").nth(1).unwrap();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mib: u64 = words[0].parse().unwrap();
    let descriptors: usize = words[3].trim_end_matches(':').parse().unwrap();
    (mib << 20, descriptors)
}

/// A figure (in bytes) from the host's /proc status, if it still runs.
fn status_field(host: &Host, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// A probe of /healthz: its status, or why there was none.
fn health(metrics: std::net::SocketAddr) -> std::io::Result<u16> {
    use std::io::Read;
    let mut stream = TcpStream::connect_timeout(&metrics, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Whether the host exits within a second.
fn exits_soon(host: &Host) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !host.has_exited() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn open_descriptors(host: &Host) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{}/fd", host.pid())).ok()?.count())
}

/// What the same host holds serving the built-in guest: the footprint
/// the ledger's bytes come on top of.
fn footprint() -> u64 {
    let (host, _dir) = sweep_host(None, &[], &[]);
    let addr = host.listen_addr();
    let mut client = connect(addr);
    assert!(echo(&mut client, b"footprint"), "{}", host.report());
    host.memory("VmHWM")
}

/// Watches `host` until its guest ends or WATCHED passes: within its
/// totals at every look, and its health probe answered.
fn watch_within_totals(host: &Host, footprint: u64, what: &str) {
    let (bytes, descriptors) = announced(host);
    assert!(descriptors as u64 <= OPEN_FILES, "{what}: N = {descriptors}");
    let metrics = host.metrics_addr();
    let started = Instant::now();
    while started.elapsed() < WATCHED && !host.has_exited() {
        let open = open_descriptors(host).unwrap_or(0);
        assert!(open <= descriptors, "{what}: {open} descriptors open, over {descriptors}");
        let peak = status_field(host, "VmHWM:").unwrap_or(0);
        let grown = peak.saturating_sub(footprint);
        assert!(grown <= bytes, "{what}: grew {} MiB, over {} MiB", grown >> 20, bytes >> 20);
        match health(metrics) {
            Ok(status) => assert_eq!(status, 200, "{what}: health\n{}", host.report()),
            // The guest has finished, and the host with it: its listeners
            // close as it exits, a moment before the process ends.
            Err(e) if exits_soon(host) => drop(e),
            Err(e) => panic!("{what}: no answer from /healthz: {e}\n{}", host.report()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(target_os = "linux")] // reads /proc
fn every_hostile_guest_leaves_the_host_within_its_announced_totals() {
    let footprint = footprint();
    let guests: &[(&str, &[&str])] = &[
        ("alloc-forever", &["--gently"]),
        ("socket-hoarder", &[]),
        ("stream-hoarder", &[]),
        ("pollable-hoarder", &[]),
        ("pollable-hoarder", &["tcp"]),
        ("spin", &[]),
        ("denied-connect-loop", &["3"]),
        ("file-hoarder", &[]),
        ("random-loop", &[]),
        ("output-tricks", &["dels", "4096"]),
        ("output-tricks", &["huge-stderr"]),
        ("output-tricks", &["forge"]),
        ("listener-options", &[]),
    ];
    for (guest, args) in guests {
        let what = format!("{guest} {}", args.join(" "));
        let (host, _dir) = sweep_host(Some(guest), args, &[]);
        if *guest == "stream-hoarder" {
            let addr = host.listen_addr();
            let clients: Vec<TcpStream> =
                (0..80).filter_map(|_| TcpStream::connect(addr).ok()).collect();
            watch_within_totals(&host, footprint, &what);
            drop(clients);
        } else {
            watch_within_totals(&host, footprint, &what);
        }
    }
}

/// With --per-client: hostile clients beside a well-behaved one, which is
/// echoed throughout, the host within its totals.
#[cfg(target_os = "linux")] // reads /proc
fn hostile_clients_leave_a_well_behaved_one_served_and_the_host_within_its_totals() {
    let footprint = footprint();
    let (host, _dir) =
        sweep_host(Some("stdio-tricks"), &[], &["--per-client", "--idle-timeout", "2s"]);
    let addr = host.per_client_addr(1);
    let (bytes, descriptors) = announced(&host);
    let mut good = connect(addr);
    let mut hostile = Vec::new();
    for command in [&b"!"[..], b"M", b"S", b"X", b"Z", b"Y", b"Y", b"W"] {
        let mut client = connect(addr);
        client.write_all(command).unwrap();
        hostile.push(client);
        assert!(echo(&mut good, b"still here"), "{}", host.report());
    }
    let deadline = Instant::now() + WATCHED;
    let mut i = 0;
    while Instant::now() < deadline {
        assert!(echo(&mut good, format!("echo {i}").as_bytes()), "{}", host.report());
        let open = open_descriptors(&host).unwrap();
        assert!(open <= descriptors, "{open} descriptors open, over {descriptors}");
        let grown = host.memory("VmHWM").saturating_sub(footprint);
        assert!(grown <= bytes, "grew {} MiB, over {} MiB", grown >> 20, bytes >> 20);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(i > 10, "{i} echoes");
    drop(hostile);
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        #[cfg(target_os = "linux")]
        every_hostile_guest_leaves_the_host_within_its_announced_totals,
        #[cfg(target_os = "linux")]
        hostile_clients_leave_a_well_behaved_one_served_and_the_host_within_its_totals,
    ]
}
