//! Floods from a guest or from clients: the log holds at most ten lines a
//! second of each kind, with summaries that keep the totals exact; the
//! service goes on; idle clients are closed when asked.

use crate::support::guests::test_guest;
use crate::support::traffic::reset;
use crate::support::{assert_echoes, connect, connect_unless_reset, host_command, Host, PATIENCE};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Lines of one kind the log writes in a second (`host/src/log_limit.rs`).
const PER_SECOND: usize = 10;

/// At most the rate over `elapsed` (a new second may start at each end).
fn at_most(elapsed: Duration) -> usize {
    PER_SECOND * (elapsed.as_secs() as usize + 2)
}

fn a_guest_retrying_a_denied_connect_cannot_flood_the_log() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        test_guest("denied-connect-loop").to_str().unwrap(),
        "--",
        "2",
    ]);
    let line = host.wait_for("tried ");
    let tries: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(tries > 1000, "the guest tried only {tries} times\n{}", host.report());
    // Every try is accounted for: the lines written and the summaries'
    // counts add up to the guest's own count.
    let written =
        host.wait_for_total("denied: TCP connect to 127.0.0.1:9", "denied TCP connects", tries);
    assert!(written <= 3 * PER_SECOND, "{written} lines for 2 s of denied connects");
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.len() < 64 * 1024, "{} bytes of log for {tries} tries", output.len());
}

/// 2 000 clients connect and reset at once: the guest meets each one
/// (a reset before or after accept), the log does not grow with them,
/// no descriptor is left behind, and the next client is served.
#[cfg(target_os = "linux")] // reads /proc
fn two_thousand_clients_resetting_at_once_neither_flood_the_log_nor_stop_the_service() {
    let (host, addr) = Host::serve(None);
    let idle = host.open_sockets();
    let start = Instant::now();
    for _ in 0..2000 {
        reset(connect(addr));
    }
    assert_echoes(addr, b"after the storm");
    host.wait_for_open_sockets(idle);
    let elapsed = start.elapsed();
    let accepted = host.output().matches("guest accepted a client").count();
    assert!(accepted <= at_most(elapsed), "{accepted} lines in {elapsed:?}\n{}", host.report());
}

/// Clients from a network --allow-client does not name, 2 000 of them:
/// each is turned away and counted exactly, in at most ten lines a second
/// and summaries, while a client from the granted network is served.
fn a_flood_from_a_denied_network_is_counted_exactly_in_few_lines() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--allow-client", "127.0.0.2/32"]);
    let addr = host.listen_addr();
    let start = Instant::now();
    for _ in 0..2000 {
        match TcpStream::connect_timeout(&addr, PATIENCE) {
            Ok(client) => drop(client),
            // The host turned it away before this thread saw it connected.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting: {e}\n{}", host.report()),
        }
    }
    let mut granted = crate::support::connect_from("127.0.0.2", addr);
    granted.write_all(b"granted").unwrap();
    let mut back = [0u8; 7];
    granted.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"granted");
    let written =
        host.wait_for_total("denied: TCP client from 127.0.0.1:", "denied TCP clients", 2000);
    let elapsed = start.elapsed();
    assert!(written <= at_most(elapsed), "{written} lines in {elapsed:?}");
}

/// A policy that needs more descriptors than the process may open (its
/// hard open-file limit: the host raises the soft one to it) is refused
/// at start, in one line that says what needs them.
#[cfg(unix)]
fn a_policy_needing_more_descriptors_than_the_limit_is_refused_at_start() {
    let mut cmd = host_command();
    cmd.args(["--listen", "127.0.0.1:0", "--max-connections", "1000"]);
    crate::support::with_open_file_limit(&mut cmd, 128);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(!status.success(), "{output}");
    let said = "error: this policy needs 1065 descriptors (64 the host's own, 1 listeners, 1000 \
                sockets), but the process may open 128 (its hard open-file limit)";
    assert!(output.contains(said), "{output}");
}

/// When the process's open-file limit is lowered under the ledger while it
/// runs (prlimit), a flood of clients that stay: those the process has
/// descriptors for are served; the rest are reset at once (not left
/// waiting), counted in at most ten lines a second; and once they leave,
/// the host serves again.
#[cfg(target_os = "linux")]
fn clients_beyond_the_descriptors_left_are_turned_away_and_the_rest_served() {
    let mut cmd = host_command();
    cmd.args(["--listen", "127.0.0.1:0"]);
    crate::support::with_open_file_limit(&mut cmd, 256);
    let host = Host::start_command(&mut cmd);
    let addr = host.listen_addr();
    let lowered = 64;
    let limit = libc::rlimit { rlim_cur: lowered, rlim_max: lowered };
    // SAFETY: prlimit only reads `limit`, for the host's process (a child of ours).
    let set = unsafe {
        libc::prlimit(host.pid() as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut())
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let start = Instant::now();
    let mut served = Vec::new();
    let mut turned_away = 0;
    for i in 0..300 {
        let Ok(mut client) = connect_unless_reset(addr) else {
            turned_away += 1;
            continue;
        };
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let message = format!("client {i:03}");
        let mut back = [0u8; 10];
        // The reset may come before the write (which then fails) or after.
        match client.write_all(message.as_bytes()).and_then(|()| client.read_exact(&mut back)) {
            Ok(()) => {
                assert_eq!(&back, message.as_bytes());
                served.push(client);
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                turned_away += 1
            }
            Err(e) => panic!("client {i}: neither served nor turned away: {e}\n{}", host.report()),
        }
    }
    assert!(
        served.len() > 20 && turned_away > 200,
        "{} served, {turned_away} turned away",
        served.len()
    );
    let line = "turned away: the process has no descriptor left (its open-file limit is 64)";
    let kind = "clients turned away for want of descriptors";
    let written = host.wait_for_total(line, kind, turned_away);
    assert!(written <= at_most(start.elapsed()), "{written} lines");
    let idle = host.open_sockets() - served.len();
    drop(served);
    host.wait_for_open_sockets(idle);
    assert_echoes(addr, b"served again");
}

/// --idle-timeout closes a client that sends nothing and is sent nothing
/// for that long, not before; the guest reads the end of its stream, the
/// client gets a FIN. A client that keeps talking stays.
fn with_idle_timeout_a_silent_client_is_closed_and_a_talking_one_stays() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--idle-timeout", "1s"]);
    let addr = host.listen_addr();
    let mut silent = connect(addr);
    // Before the echo: the host's last word to it comes after this.
    let silent_since = Instant::now();
    assert!(crate::support::clients::echo(&mut silent, b"then silence"));
    let mut reader = silent.try_clone().unwrap();
    // When the silent client's connection ends, as it happens.
    let closed = std::thread::spawn(move || {
        let ended = reader.read(&mut [0u8; 1]);
        (ended.map_err(|e| e.kind()), silent_since.elapsed())
    });
    let mut talker = connect(addr);
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            crate::support::clients::echo(&mut talker, format!("{i}").as_bytes()),
            "{}",
            host.report()
        );
    }
    let (ended, after) = closed.join().unwrap();
    assert_eq!(ended, Ok(0), "the silent client was not closed with a FIN");
    assert!(after >= Duration::from_secs(1), "closed after {after:?}, before its time");
    let peer = silent.local_addr().unwrap();
    host.wait_for(&format!(
        "closed the connection of {peer}: nothing received or sent for 1s (--idle-timeout)"
    ));
    host.wait_for(&format!("client disconnected: {peer}"));
    let talker_peer = talker.local_addr().unwrap();
    host.settled();
    assert!(!host.output().contains(&format!("connection of {talker_peer}")), "{}", host.report());
}

/// Without --idle-timeout a silent client is held, as long as it likes.
fn without_idle_timeout_a_silent_client_is_held() {
    let (host, addr) = Host::serve(None);
    let mut client = connect(addr);
    assert!(crate::support::clients::echo(&mut client, b"before"));
    // Not a wait for something to happen: the silence being tested.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(crate::support::clients::echo(&mut client, b"after"), "{}", host.report());
    host.settled();
    assert!(!host.output().contains("--idle-timeout"), "{}", host.report());
}

/// With --idle-timeout, each client is watched; the watch goes with its
/// connection. A client opening and closing connections as fast as it can
/// does not pile watches up for the length of the timeout: the host's
/// memory stays where it was.
#[cfg(target_os = "linux")] // reads /proc
fn short_connections_leave_no_idle_watch_behind() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--idle-timeout", "1h"]);
    let addr = host.listen_addr();
    let churn = |n: usize| {
        for i in 0..n {
            let mut client = connect(addr);
            assert!(crate::support::clients::echo(&mut client, format!("{i}").as_bytes()));
        }
    };
    churn(2_000);
    let before = host.memory("VmRSS");
    churn(20_000);
    let grown = host.memory("VmRSS").saturating_sub(before);
    assert!(grown < 4 << 20, "the host grew by {} KiB over 20 000 short connections", grown >> 10);
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        a_guest_retrying_a_denied_connect_cannot_flood_the_log,
        #[cfg(target_os = "linux")]
        two_thousand_clients_resetting_at_once_neither_flood_the_log_nor_stop_the_service,
        a_flood_from_a_denied_network_is_counted_exactly_in_few_lines,
        #[cfg(unix)]
        a_policy_needing_more_descriptors_than_the_limit_is_refused_at_start,
        #[cfg(target_os = "linux")]
        clients_beyond_the_descriptors_left_are_turned_away_and_the_rest_served,
        with_idle_timeout_a_silent_client_is_closed_and_a_talking_one_stays,
        without_idle_timeout_a_silent_client_is_held,
        #[cfg(target_os = "linux")]
        short_connections_leave_no_idle_watch_behind,
    ]
}
