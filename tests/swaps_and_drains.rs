//! The failure paths of swaps and drains: a swap that fails while a client
//! waits, a draining instance that closes its listener, the running guest
//! failing during a swap, signals during a graceful stop. Each keeps
//! serving, and says so.

use crate::support::clients::echo;
use crate::support::guests::{default_guest, install, installed, test_guest, Control};
use crate::support::{connect, Host};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A client that writes `message` now and checks its echo later.
fn waiting_client(addr: SocketAddr, message: &[u8]) -> TcpStream {
    let mut client = connect(addr);
    client.write_all(message).unwrap();
    client
}

fn assert_echo_of(client: &mut TcpStream, message: &[u8], host: &Host) {
    let mut back = vec![0u8; message.len()];
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    client.read_exact(&mut back).unwrap_or_else(|e| panic!("no echo: {e}\n{}", host.report()));
    assert_eq!(back, message);
}

/// A swap whose new guest takes the granted address (binding it, or
/// listening on one of the two) and fails before it serves: a client that
/// arrived meanwhile is served by the old instance, and so is every later
/// one, on both addresses.
fn a_failed_swap_serves_the_client_that_arrived_during_it_and_every_later_one() {
    for mode in ["bind", "listen"] {
        let (_dir, file) = installed(&default_guest());
        let control = Control::new();
        let host = Host::start(&[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.2:0",
            "--allow-connect",
            &control.addr(),
            file.to_str().unwrap(),
            "--",
            &control.addr(),
            mode,
        ]);
        let (first, second) = (host.nth_listen_addr(1), host.nth_listen_addr(2));
        install(&test_guest("swap-window"), &file);
        host.signal(libc::SIGHUP);
        let held = control.accept();
        let mut during = waiting_client(first, b"arrived during the swap");
        drop(held);
        let failed = host.wait_for("swap failed:");
        assert!(failed.contains("the new guest ended before listening"), "{failed}");
        assert_echo_of(&mut during, b"arrived during the swap", &host);
        for addr in [first, second] {
            let mut later = connect(addr);
            assert!(
                echo(&mut later, b"after the failed swap"),
                "{mode}: {addr}\n{}",
                host.report()
            );
        }
    }
}

/// An old instance, draining after a swap, closes its listener: the
/// clients waiting for the new (one at a time) instance are not reset; they
/// are served in turn.
fn a_draining_instance_closing_its_listener_resets_no_client_of_the_new_one() {
    let (host, (_dir, file), mut old_client) = draining_closer();
    install(&test_guest("guest_iterative"), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    let addr = host.listen_addr();
    let mut busy = connect(addr);
    assert!(echo(&mut busy, b"keeps #2 busy"), "{}", host.report());
    let mut waiting = waiting_client(addr, b"waits in the backlog");
    close_the_old_listener(&mut old_client, &host);
    drop(busy);
    assert_echo_of(&mut waiting, b"waits in the backlog", &host);
}

/// The same, while the new instance waits in `poll` on the listener: it
/// is still woken for the next client.
fn a_draining_instance_closing_its_listener_leaves_the_new_one_awake() {
    let (host, (_dir, file), mut old_client) = draining_closer();
    install(&default_guest(), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    let addr = host.listen_addr();
    let mut before = connect(addr);
    assert!(echo(&mut before, b"served by #2"), "{}", host.report());
    close_the_old_listener(&mut old_client, &host);
    let mut next = waiting_client(addr, b"the next client");
    assert_echo_of(&mut next, b"the next client", &host);
}

/// A host running `listener-closer` (its file in a directory that lives
/// as long as the returned handle) with one client connected to it.
fn draining_closer() -> (Host, (tempfile::TempDir, std::path::PathBuf), TcpStream) {
    let (dir, file) = installed(&test_guest("listener-closer"));
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m", file.to_str().unwrap()]);
    let mut client = connect(host.listen_addr());
    assert!(echo(&mut client, b"old\n"), "{}", host.report());
    (host, (dir, file), client)
}

fn close_the_old_listener(client: &mut TcpStream, host: &Host) {
    client.write_all(b"close-listener\n").unwrap();
    let mut line = String::new();
    BufReader::new(client.try_clone().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "closed\n", "{}", host.report());
    assert!(echo(client, b"still served\n"), "{}", host.report());
}

/// The running guest fails while a new one is being swapped in: it is not
/// restarted (the restart would take the listener from the new one); the
/// new one takes over and serves, and says so.
fn the_running_guest_failing_during_a_swap_leaves_the_new_one_to_serve() {
    let (_dir, file) = installed(&test_guest("crash-on-bang"));
    let control = Control::new();
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart",
        "on-failure",
        "--allow-connect",
        &control.addr(),
        file.to_str().unwrap(),
        "--",
        &control.addr(),
        "serve",
    ]);
    let addr = host.listen_addr();
    install(&test_guest("swap-window"), &file);
    host.signal(libc::SIGHUP);
    let held = control.accept();
    let mut bang = connect(addr);
    bang.write_all(b"!").unwrap();
    let ended = host.wait_for("the running guest ended (");
    assert!(ended.contains("while a new one is starting"), "{ended}");
    drop(held);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    let mut client = connect(addr);
    assert!(echo(&mut client, b"served by the new guest"), "{}", host.report());
    host.wait_for("[swap-window] client connected");
    host.settled();
    assert!(!host.output().contains("restarting it in"), "{}", host.report());
}

/// At most two old instances drain at once (the ledger counts four alive:
/// serving, starting, two draining): a SIGHUP while two still drain fails,
/// saying why (the running guest keeps serving), and once one of them has
/// finished, a swap goes through again.
fn a_swap_while_two_instances_drain_fails_until_one_finishes() {
    let (_dir, file) = installed(&default_guest());
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m", file.to_str().unwrap()]);
    let addr = host.listen_addr();
    let mut clients = Vec::new();
    for n in 2..=3 {
        let mut client = connect(addr);
        assert!(echo(&mut client, b"kept by its instance"), "{}", host.report());
        clients.push(client);
        host.signal(libc::SIGHUP);
        host.wait_for(&format!("swap: the new guest instance #{n} listens"));
    }
    host.signal(libc::SIGHUP);
    let failed = host.wait_for("swap failed: SIGHUP received, but 2 older guest instances");
    assert!(failed.ends_with("the running guest keeps serving"), "{failed}");
    let mut client = connect(addr);
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    drop(clients.remove(0));
    host.wait_for("swap: guest instance #1 has no clients left; stopped it");
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #4 listens");
    assert!(echo(&mut connect(addr), b"the fourth"), "{}", host.report());
}

/// A swapped-in guest that binds the granted address, sets every option
/// it can to a value no one wants (hop limit 1, one-byte buffers, a
/// one-second keep-alive, a backlog of 1), then traps: the swap fails, and
/// nothing of it is left behind. The old guest's new clients get the
/// system's options (read in the host's own socket, through the kernel),
/// and so does the kept listener. And a guest that sets them and serves
/// (its backlog, 1, is the listener's while it has the turn) leaves none of
/// them behind either once a clean guest is swapped in for it.
#[cfg(target_os = "linux")]
fn a_swapped_out_guest_leaves_none_of_its_socket_options_behind() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let mode = |mode: &str| std::fs::write(&policy, format!("env = {{ MODE = \"{mode}\" }}\n"));
    mode("report").unwrap();
    let guest = test_guest("listener-options");
    let policy_arg = policy.to_str().unwrap();
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--policy", policy_arg, guest.to_str().unwrap()]);
    host.wait_for("report: listening");
    let addr = host.listen_addr();
    let fresh = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let system = (fresh.ttl_v4().unwrap(), fresh.keepalive().unwrap());
    let before = client_options(&host, addr);
    assert_eq!((before.0, before.1), system, "{}", host.report());
    let kept_listener = || {
        let listener = crate::support::host_socket(&host, |s| {
            s.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
                && s.is_listener().unwrap_or(false)
        });
        let listener = socket2::Socket::from(listener.expect("the kept listener"));
        (listener.ttl_v4().unwrap(), listener.keepalive().unwrap())
    };

    mode("poison").unwrap();
    host.signal(libc::SIGHUP);
    host.wait_for("poison: bound with hop-limit=1 keep-alive=true");
    host.wait_for("swap failed: the new guest ended before listening");
    let after = client_options(&host, addr);
    assert_eq!(after, before, "a client of the old guest after the failed swap\n{}", host.report());
    assert_eq!(kept_listener(), system);
    assert_eq!(listen_backlog(addr.port()), 128, "the old guest's backlog\n{}", host.report());

    mode("poison-listen").unwrap();
    host.signal(libc::SIGHUP);
    host.wait_for("poison: listening with hop-limit=1 keep-alive=true");
    host.wait_for_nth("takes every new client", 1);
    assert_eq!(listen_backlog(addr.port()), 1, "its turn, its backlog\n{}", host.report());
    assert_eq!(kept_listener(), system, "the listener itself is the host's");
    mode("report").unwrap();
    host.signal(libc::SIGHUP);
    host.wait_for_nth("report: listening", 2);
    host.wait_for_nth("takes every new client", 2);
    assert_eq!(listen_backlog(addr.port()), 128, "the clean guest's backlog\n{}", host.report());
    assert_eq!(client_options(&host, addr), before, "{}", host.report());
}

/// A client's connection to `addr`, and the options of the host's side of
/// it, read from the host's own socket: hop limit, keep-alive, and the
/// receive and send buffers as the kernel has them.
#[cfg(target_os = "linux")]
fn client_options(host: &Host, addr: SocketAddr) -> (u32, bool, usize, usize) {
    let mut client = connect(addr);
    assert!(echo(&mut client, b"options?"), "{}", host.report());
    let local = client.local_addr().unwrap();
    let server = crate::support::host_socket(host, |s| {
        s.peer_addr().ok().and_then(|a| a.as_socket()) == Some(local)
    });
    let server = socket2::Socket::from(server.expect("the host's side of the connection"));
    let options = (
        server.ttl_v4().unwrap(),
        server.keepalive().unwrap(),
        server.recv_buffer_size().unwrap(),
        server.send_buffer_size().unwrap(),
    );
    drop(client);
    options
}

/// A listening socket's backlog on loopback: the Send-Q `ss` shows for it.
#[cfg(target_os = "linux")]
fn listen_backlog(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().next().unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    row.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// SIGHUP and a second SIGQUIT during a graceful stop change nothing: the
/// connected client is served until it leaves, then the host exits.
fn sighup_and_sigquit_during_a_graceful_stop_change_nothing() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m"]);
    let mut client = connect(host.listen_addr());
    assert!(echo(&mut client, b"before"));
    host.signal(libc::SIGQUIT);
    host.wait_for("stop: guest instance #1 takes no new clients");
    host.signal(libc::SIGHUP);
    host.wait_for("SIGHUP received while stopping gracefully; ignored");
    assert!(echo(&mut client, b"after SIGHUP"), "{}", host.report());
    host.signal(libc::SIGQUIT);
    host.wait_for("SIGQUIT received; already stopping gracefully");
    assert!(echo(&mut client, b"after SIGQUIT"), "{}", host.report());
    drop(client);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("stop: guest instance #1 has no clients left; stopped it"), "{output}");
}

/// SIGQUIT while a swap's new instance starts and already serves a client
/// (on one of two addresses): that instance is drained too, its client
/// served until it leaves.
fn sigquit_during_a_swap_drains_the_new_instance_too() {
    let (_dir, file) = installed(&default_guest());
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.2:0",
        "--drain-timeout",
        "5m",
        file.to_str().unwrap(),
        "--",
        "unused",
        "serve-now",
    ]);
    let first = host.nth_listen_addr(1);
    host.nth_listen_addr(2);
    install(&test_guest("swap-window"), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("[swap-window] listening");
    let mut client = connect(first);
    assert!(echo(&mut client, b"served by the new instance"), "{}", host.report());
    host.wait_for("[swap-window] client connected");
    host.signal(libc::SIGQUIT);
    host.wait_for("stop: guest instance #2 takes no new clients; it serves its 1");
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    drop(client);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
}

/// SIGQUIT drains every instance: one still draining from a swap too.
fn sigquit_drains_the_instances_still_draining_from_a_swap() {
    let (_dir, file) = installed(&default_guest());
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m", file.to_str().unwrap()]);
    let addr = host.listen_addr();
    let mut old = connect(addr);
    assert!(echo(&mut old, b"served by #1"));
    host.signal(libc::SIGHUP);
    host.wait_for("swap: guest instance #1 takes no new clients");
    host.signal(libc::SIGQUIT);
    host.wait_for("stop: guest instance #2 takes no new clients");
    assert!(echo(&mut old, b"still served by #1"), "{}", host.report());
    drop(old);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("swap: guest instance #1 has no clients left; stopped it"), "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        a_swap_while_two_instances_drain_fails_until_one_finishes,
        #[cfg(target_os = "linux")]
        a_swapped_out_guest_leaves_none_of_its_socket_options_behind [needs crate::support::need::pidfd_getfd()],
        a_failed_swap_serves_the_client_that_arrived_during_it_and_every_later_one,
        a_draining_instance_closing_its_listener_resets_no_client_of_the_new_one,
        a_draining_instance_closing_its_listener_leaves_the_new_one_awake,
        the_running_guest_failing_during_a_swap_leaves_the_new_one_to_serve,
        sighup_and_sigquit_during_a_graceful_stop_change_nothing,
        sigquit_during_a_swap_drains_the_new_instance_too,
        sigquit_drains_the_instances_still_draining_from_a_swap,
    ]
}
