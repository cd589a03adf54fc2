//! SIGINT, and a second SIGTERM, stop the host at once (exit status 0)
//! wherever the guest is, and free the port at once. (The first SIGTERM
//! stops it gracefully: `operate.rs`.)

use crate::support::guests::test_guest;
use crate::support::{assert_echoes, connect, Host, PATIENCE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

/// Stops `host` at once with `signal`: SIGINT; or SIGTERM, sent twice
/// (the first drains, the second stops).
fn assert_stops_cleanly(host: Host, signal: libc::c_int, name: &str) {
    if signal == libc::SIGTERM {
        host.signal(signal);
        host.wait_for("SIGTERM received: taking no new clients");
    }
    host.signal(signal);
    let (status, output) = host.wait();
    assert!(status.success(), "exit status {status:?}\n{output}");
    assert!(output.contains(&format!("{name} received: stopping the guest")), "{output}");
}

fn assert_port_free(addr: SocketAddr) {
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} is not free again: {e}"));
}

fn sigint_while_the_guest_waits_in_accept() {
    let (host, addr) = Host::serve(None);
    assert_echoes(addr, b"before");
    host.wait_for("client disconnected");
    assert_stops_cleanly(host, libc::SIGINT, "SIGINT");
    assert_port_free(addr);
}

/// The lesson's step 1 really blocks: in `accept`, then in `recv`.
fn sigint_while_the_iterative_guest_blocks_in_accept_or_recv() {
    let guest = test_guest("guest_iterative");
    let serve = || Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap()]);

    let host = serve();
    let addr = host.listen_addr();
    assert_stops_cleanly(host, libc::SIGINT, "SIGINT");
    assert_port_free(addr);

    let host = serve();
    let addr = host.listen_addr();
    let mut client = connect(addr);
    client.write_all(b"ping").unwrap();
    client.read_exact(&mut [0u8; 4]).unwrap();
    // The guest echoed and is back in recv(), waiting for more.
    assert_stops_cleanly(host, libc::SIGINT, "SIGINT");
    assert_port_free(addr);
}

/// SIGTERM drains: a client connected keeps the host serving; the
/// second SIGTERM stops it.
fn a_second_sigterm_while_a_client_is_connected() {
    let (host, addr) = Host::serve(None);
    let mut client = connect(addr);
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_stops_cleanly(host, libc::SIGTERM, "SIGTERM");
    // The client sees its connection end: a FIN (nothing was left unread).
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(matches!(client.read(&mut buf), Ok(0)), "the connection did not end");
    // The closed connection may linger in TIME_WAIT; binding again works anyway.
    assert_port_free(addr);
}

/// A guest with no client to drain stops at the first SIGTERM, even one
/// that spins.
fn sigterm_while_the_guest_spins() {
    let guest = test_guest("spin");
    let host = Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    host.wait_for("spinning");
    assert_drains_and_stops(host);
}

/// SIGTERM, with no client connected: the drain is over at once, and the
/// guest is stopped wherever it is.
fn assert_drains_and_stops(host: Host) {
    host.signal(libc::SIGTERM);
    let (status, output) = host.wait();
    assert!(status.success(), "exit status {status:?}\n{output}");
    assert!(output.contains("stop: guest instance #1 has no clients left; stopped it"), "{output}");
}

/// The epoch ticker sleeps while the host waits; it must wake with it, or
/// a guest that spins after waiting could not be stopped.
#[cfg(target_os = "linux")] // reads /proc
fn sigterm_while_the_guest_spins_after_the_host_was_idle() {
    let guest = test_guest("spin");
    let host =
        Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap(), "--", "after-a-client"]);
    let addr = host.listen_addr();
    host.wait_until_idle();
    // The guest takes this client, lets it go, and spins.
    let _client = connect(addr);
    host.wait_for("spinning");
    assert_drains_and_stops(host);
}

fn sigint_while_the_guest_spins() {
    let guest = test_guest("spin");
    let host = Host::start(&["--listen", "127.0.0.1:0", guest.to_str().unwrap()]);
    host.wait_for("spinning");
    assert_stops_cleanly(host, libc::SIGINT, "SIGINT");
}

/// Start-up: a client that connects while the host is starting is refused
/// (and may retry) or served, never accepted and then reset. (The host's
/// early "is the port free?" check must not listen on the port.)
fn a_client_connecting_during_start_up_is_refused_or_served_never_reset() {
    for _ in 0..10 {
        let reserved = crate::support::reserved_addr();
        let addr = reserved.addr;
        let host = Host::start(&["--listen", &addr.to_string()]);
        // Connect as fast as possible from the moment the host starts.
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        let mut client = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(client) => break crate::support::with_timeouts(client),
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < deadline =>
                {
                    continue
                }
                Err(e) => panic!("connecting: {e}\n{}", host.report()),
            }
        };
        client.write_all(b"early").unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap_or_else(|e| panic!("{e}\n{}", host.report()));
        assert_eq!(&back, b"early");
    }
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        sigint_while_the_guest_waits_in_accept,
        sigint_while_the_iterative_guest_blocks_in_accept_or_recv,
        a_second_sigterm_while_a_client_is_connected,
        sigterm_while_the_guest_spins,
        #[cfg(target_os = "linux")]
        sigterm_while_the_guest_spins_after_the_host_was_idle [needs need::wchan()],
        sigint_while_the_guest_spins,
        a_client_connecting_during_start_up_is_refused_or_served_never_reset,
    ]
}
