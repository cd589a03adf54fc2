//! The host's own wasi:sockets/tcp: the spec's contract, checked from a
//! guest (`tests/guests/src/bin/tcp-contract.rs`), the traps the spec
//! names, how a stream ends, and listeners that outlive a crashed guest.

use crate::support::clients::{served_more, stream_of_clients, Tally};
use crate::support::guests::test_guest;
use crate::support::{connect, Host};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn contract(host_args: &[&str], args: &[&str]) -> (bool, String) {
    let guest = test_guest("tcp-contract");
    let mut all = host_args.to_vec();
    all.extend([
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
        "--allow-connect",
        "127.0.0.1:*",
        "--allow-connect",
        "[::1]:*",
        guest.to_str().unwrap(),
    ]);
    if !args.is_empty() {
        all.push("--");
        all.extend(args);
    }
    let (status, output) = Host::start(&all).wait();
    (status.success(), output)
}

/// Every check by name, so that one the guest skipped counts as failed.
const CHECKS: &[&str] = &[
    "unbound-state",
    "bind-arguments",
    "bind-denied-stays-unbound",
    "bind-in-progress",
    "listen-in-progress",
    "listen-denied-closes",
    "accept-and-connected-state",
    "connect-arguments",
    "connect-denied-closes",
    "connect-refused-closes",
    "connect-in-progress",
    "option-ranges",
    "option-readback",
    "options-inherited-by-accepted",
    "backlog-after-listen",
    "shutdown-send",
    "shutdown-receive",
    "end-of-stream-is-closed",
    "socket-dropped-before-streams",
    "ipv6",
    "name-lookup-not-granted",
];

/// The contract's states and error codes a guest can reach on its own,
/// check by check (the list above). Those it cannot make happen at will
/// (address-in-use between two instances, new-socket-limit, an accept
/// that fails: connection-aborted) are the unit tests' of `tcp.rs`.
fn the_tcp_contract_as_a_guest_reaches_it() {
    let (success, output) = contract(&[], &[]);
    let missing: Vec<_> =
        CHECKS.iter().filter(|name| !output.lines().any(|l| l == format!("ok {name}"))).collect();
    assert!(missing.is_empty() && success, "not ok: {missing:?}\n{output}");
    assert!(output.contains(&format!("{} checks, 0 failed", CHECKS.len())), "{output}");
}

/// `--trace` covers every TCP call, connect, shutdown and socket options
/// included, in WinSock words next to the wasi names.
fn the_trace_shows_every_kind_of_tcp_call() {
    let (success, output) = contract(&["--trace"], &[]);
    assert!(success, "{output}");
    for expected in [
        "trace: socket()                       = tcp-create-socket.create-tcp-socket(ipv6) -> tcp-socket#",
        "trace: bind(127.0.0.2:0)              = tcp-socket.start-bind(127.0.0.2:0) -> error access-denied [policy: denied]",
        "trace: connect(127.0.0.2:80)          = tcp-socket.start-connect(127.0.0.2:80) -> error access-denied [policy: denied]",
        "= tcp-socket.finish-connect -> connected: input-stream#",
        "trace: shutdown(SD_SEND)              = tcp-socket.shutdown(send) -> ok",
        "trace: shutdown(SD_RECEIVE)           = tcp-socket.shutdown(receive) -> ok",
        "trace: setsockopt(SO_KEEPALIVE, 1)    = tcp-socket.set-keep-alive-enabled(1) -> ok",
        "trace: setsockopt(TCP_KEEPIDLE, 0)    = tcp-socket.set-keep-alive-idle-time(0) -> error invalid-argument",
        "trace: getsockopt(IP_TTL)             = tcp-socket.hop-limit -> 42",
        "trace: getsockname()                  = tcp-socket.local-address -> 127.0.0.1:",
        "trace: getpeername()                  = tcp-socket.remote-address -> 127.0.0.1:",
        "trace: accept()                       = tcp-socket.accept -> would-block (not yet: wait on the pollable)",
        "trace: closesocket()                  = [drop] tcp-socket#",
        "trace: WSAPoll(2 entries) -> 1        = poll(2 pollables) -> ready [0]",
    ] {
        assert!(output.contains(expected), "no {expected:?} in\n{output}");
    }
}

fn writing_more_than_check_write_allowed_traps() {
    let (success, output) = contract(&[], &["write-over-permit"]);
    assert!(!success, "{output}");
    assert!(output.contains("check-write granted 65536"), "{output}");
    assert!(output.contains("error: the guest trapped"), "{output}");
    assert!(output.contains("write of more bytes than check-write allowed"), "{output}");
    assert!(!output.contains("did not trap"), "{output}");
}

fn blocking_write_and_flush_of_more_than_4096_bytes_traps() {
    let (success, output) = contract(&[], &["blocking-write-4097"]);
    assert!(!success, "{output}");
    assert!(output.contains("error: the guest trapped"), "{output}");
    assert!(output.contains("expected at most 4096"), "{output}");
    assert!(!output.contains("did not trap"), "{output}");
}

fn poll_of_an_empty_list_traps() {
    let (success, output) = contract(&[], &["poll-empty"]);
    assert!(!success, "{output}");
    assert!(output.contains("error: the guest trapped"), "{output}");
    assert!(output.contains("empty poll list"), "{output}");
    assert!(!output.contains("did not trap"), "{output}");
}

/// A guest that polls a zero timeout with its stream, and so never waits,
/// still sees data arrive: the async runtime is let look for it.
fn a_guest_that_never_waits_still_sees_data_arrive() {
    let (success, output) = contract(&[], &["busy-poll"]);
    assert!(success, "{output}");
    assert!(output.contains("busy poll: every round saw its data"), "{output}");
}

/// A client's input, polled with the host's own pollables (and found not
/// readable), then with a timer (a list the host answers the ordinary
/// way), then alone again: data sent now still wakes the guest. The host
/// answers "not readable" from memory only while its own waker is the one
/// the runtime holds (`host/src/sockets/read_wake.rs`).
fn a_poll_after_a_mixed_poll_still_wakes_for_data() {
    let guest = test_guest("poll-mixed-then-own");
    let host = Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    let mut first = connect(host.listen_addr());
    host.wait_for("[mixed] step 1: the first client and the listener");
    let _second = connect(host.listen_addr());
    host.wait_for("[mixed] step 3: the first client alone");
    first.write_all(b"still heard\n").unwrap();
    let mut echo = [0u8; 12];
    first.read_exact(&mut echo).expect("the echo, not a poll that never wakes");
    assert_eq!(&echo, b"still heard\n");
    host.wait_for("[mixed] echoed");
}

/// The benchmark's floor guest (`bench --floor`, `tests/guests/src/bin/
/// call-floor.rs`) on the host: each `poll` over up to 1 000 pollables,
/// all but one of them the same silent client's input (armed after the
/// first look, `read_wake.rs`), answers exactly the one that is ready (the
/// guest traps otherwise), and the guest gets through every measure.
fn a_poll_of_many_pollables_answers_only_the_ready_one() {
    let guest = test_guest("call-floor");
    let host = Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    host.wait_for("floor listening");
    let _silent = connect(host.listen_addr());
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    for measure in ["now", "check-write", "poll-1", "poll-10", "poll-100", "poll-1000"] {
        assert!(output.contains(&format!("floor {measure} ")), "no {measure}: {output}");
    }
    assert!(output.contains("floor done"), "{output}");
}

/// The host's own `write` (for its sockets' streams) leaves every other
/// stream's to wasmtime-wasi: a guest's `write` to stdout still arrives.
fn a_write_to_stdout_reaches_stdout() {
    let (success, output) = contract(&[], &["write-stdout"]);
    assert!(success, "{output}");
    assert!(output.contains("written to stdout with check-write, write and flush"), "{output}");
}

/// Starts the contract guest's `serve-once` mode and connects to it.
fn serve_once() -> (Host, TcpStream) {
    let guest = test_guest("tcp-contract");
    let host =
        Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap(), "--", "serve-once"]);
    let client = connect(host.listen_addr());
    (host, client)
}

fn a_reset_ends_the_input_stream_with_last_operation_failed() {
    let (host, mut client) = serve_once();
    client.write_all(b"x").unwrap();
    host.wait_for("read 1 bytes");
    socket2::SockRef::from(&client).set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(client);
    let line = host.wait_for("the stream ended");
    assert!(line.contains("last-operation-failed (Connection reset by peer"), "{line}");
}

/// After a write fails, the output stream is closed: the next call says
/// so, and grants no more room to write.
fn after_a_failed_write_the_output_stream_is_closed() {
    let guest = test_guest("tcp-contract");
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        guest.to_str().unwrap(),
        "--",
        "write-after-reset",
    ]);
    let mut client = connect(host.listen_addr());
    client.write_all(b"x").unwrap();
    host.wait_for("got a byte");
    socket2::SockRef::from(&client).set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(client);
    let failure = host.wait_for("the first failure: ");
    assert!(failure.contains("last-operation-failed (Connection reset by peer"), "{failure}");
    let next = host.wait_for("then check-write: ");
    assert!(next.ends_with("then check-write: Err(\"closed\")"), "{next}");
}

fn a_close_ends_the_input_stream_with_closed() {
    let (host, mut client) = serve_once();
    client.write_all(b"x").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let line = host.wait_for("the stream ended");
    assert!(line.ends_with("the stream ended: closed"), "{line}");
}

/// A guest that crashes (`crash-on-bang`, one client at a time, panics on
/// `!`) under a steady stream of new clients, with `--restart on-failure`:
/// the host keeps its listener open, so clients that connect while it is
/// down wait in the backlog and the restarted guest serves them. None is
/// refused, and every echo is exact.
fn a_crashed_guests_listener_stays_open_and_no_client_is_refused() {
    let guest = test_guest("crash-on-bang");
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart",
        "on-failure",
        guest.to_str().unwrap(),
    ]);
    let addr = host.listen_addr();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients: Vec<_> = (0..4).map(|_| stream_of_clients(addr, &stop, &tally)).collect();
    for crash in 1..=3 {
        let mut bang = connect(addr);
        bang.write_all(b"!").unwrap();
        host.wait_for_nth("restarting it in", crash);
        assert_eq!(host.nth_listen_addr(crash + 1), addr, "the same listener, the same port");
        // Clients were served after the restart, not only before it.
        served_more(&tally, 20, &host);
    }
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap());
    let (refused, failed) =
        (tally.refused.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!(
        (refused, failed),
        (0, 0),
        "refused, failed while the guest restarted\n{}",
        host.report()
    );
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        the_tcp_contract_as_a_guest_reaches_it [needs need::ipv6()],
        the_trace_shows_every_kind_of_tcp_call [needs need::ipv6()],
        writing_more_than_check_write_allowed_traps [needs need::ipv6()],
        blocking_write_and_flush_of_more_than_4096_bytes_traps [needs need::ipv6()],
        poll_of_an_empty_list_traps [needs need::ipv6()],
        a_guest_that_never_waits_still_sees_data_arrive [needs need::ipv6()],
        a_poll_after_a_mixed_poll_still_wakes_for_data,
        a_poll_of_many_pollables_answers_only_the_ready_one,
        a_write_to_stdout_reaches_stdout [needs need::ipv6()],
        a_reset_ends_the_input_stream_with_last_operation_failed,
        after_a_failed_write_the_output_stream_is_closed,
        a_close_ends_the_input_stream_with_closed,
        a_crashed_guests_listener_stays_open_and_no_client_is_refused,
    ]
}
