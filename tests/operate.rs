//! Operating the host: swapping the guest on SIGHUP without closing the
//! port, and listening sockets handed over by a service manager (socket
//! activation).

use crate::support::clients::{echo, served_more, stream_of_clients, Tally};
use crate::support::guests::{default_guest, install, installed, test_guest};
use crate::support::{connect, prepare, Host, HOST_BIN, PATIENCE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clients that stay connected through every swap, echoing now and then.
fn long_lived_clients(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    std::thread::spawn(move || {
        for round in 0.. {
            for (i, client) in clients.iter_mut().enumerate() {
                client.set_read_timeout(Some(PATIENCE)).unwrap();
                let counter =
                    match echo(client, format!("long-lived {i} round {round}\n").as_bytes()) {
                        true => &tally.served,
                        false => &tally.failed,
                    };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// SIGHUP under load, four times: the same guest again, a guest that
/// traps at start (the old one keeps serving), a different guest (which
/// takes over), a file that is not a component. No client is refused or
/// reset, every byte comes back, and each old instance drains.
fn sighup_swaps_the_guest_without_closing_the_port() {
    let (_dir, file) = installed(&default_guest());
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m", file.to_str().unwrap()]);
    let addr = host.listen_addr();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let long_lived = long_lived_clients(addr, &stop, &tally);
    let streams: Vec<_> = (0..2).map(|_| stream_of_clients(addr, &stop, &tally)).collect();
    served_more(&tally, 50, &host);

    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #2 listens on 127.0.0.1:");
    host.wait_for("swap: guest instance #1 takes no new clients; it serves its ");
    served_more(&tally, 50, &host);

    install(&test_guest("trap"), &file);
    host.signal(libc::SIGHUP);
    let failed = host.wait_for("swap failed:");
    assert!(failed.contains("the new guest ended before listening on 127.0.0.1:"), "{failed}");
    assert!(failed.ends_with("the running guest keeps serving"), "{failed}");
    served_more(&tally, 50, &host);

    install(&test_guest("echo-std"), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("swap: the new guest instance #4 listens on 127.0.0.1:");
    host.wait_for("swap: guest instance #2 has no clients left; stopped it");
    served_more(&tally, 50, &host);
    // The std guest serves the new clients now: they show in its output.
    host.wait_for("[std echo] client connected: 127.0.0.1:");

    std::fs::write(&file, b"not a component").unwrap();
    host.signal(libc::SIGHUP);
    let failed = host.wait_for_nth("swap failed:", 2);
    assert!(failed.contains("is not a WebAssembly component"), "{failed}");
    served_more(&tally, 50, &host);

    stop.store(true, Ordering::Relaxed);
    long_lived.join().unwrap();
    streams.into_iter().for_each(|s| s.join().unwrap());
    host.wait_for("swap: guest instance #1 has no clients left; stopped it");
    let (refused, failed) =
        (tally.refused.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    assert_eq!((refused, failed), (0, 0), "refused, failed round trips\n{}", host.report());
}

/// `socket` passed the way systemd passes one: as descriptor 3, with
/// LISTEN_FDS=1 and LISTEN_PID (the shell that execs the host keeps its pid).
fn handed(socket: &impl AsRawFd, args: &[&str]) -> Host {
    handed_saying(socket, 1, args)
}

/// The same, with LISTEN_FDS saying `count` descriptors were passed.
fn handed_saying(socket: &impl AsRawFd, count: usize, args: &[&str]) -> Host {
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("sh");
    let script = format!("LISTEN_FDS={count} LISTEN_PID=$$ exec \"$0\" \"$@\"");
    prepare(&mut cmd).env_remove("LISTEN_FDNAMES").args(["-c", &script, HOST_BIN]).args(args);
    // SAFETY: between fork and exec, in the child: dup2 and fcntl only.
    unsafe {
        cmd.pre_exec(move || {
            let done = match fd {
                // Already descriptor 3: only keep it open across exec.
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                _ => libc::dup2(fd, 3),
            };
            match done >= 0 {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    Host::start_command(&mut cmd)
}

fn a_socket_handed_over_becomes_the_grant_and_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let host = handed(&listener, &[]);
    host.wait_for(&format!("granted: listen on {addr};"));
    drop(listener);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"handed over"), "{}", host.report());
}

/// With a `--listen` grant for its address, the handed socket serves it:
/// the host binds nothing (if it tried, the address would be in use).
fn a_socket_handed_over_serves_its_grant_and_the_host_binds_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let host = handed(&listener, &["--listen", &addr.to_string()]);
    host.wait_for(&format!("guest listening on {addr}"));
    let mut client = connect(addr);
    assert!(echo(&mut client, b"no bind"), "{}", host.report());
}

fn a_handed_descriptor_that_is_not_a_listening_tcp_socket_is_a_clear_error() {
    let bound_only =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    bound_only.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for descriptor in [bound_only.as_raw_fd(), udp.as_raw_fd()] {
        let (status, output) = handed(&Fd(descriptor), &[]).wait();
        assert!(!status.success(), "{output}");
        let expected = "wasi-tcp-host: error: descriptor 3, passed by the service manager, is not a listening TCP socket";
        assert_eq!(output.trim(), expected);
    }
}

/// LISTEN_FDS counting a descriptor that is not open: an error, and the
/// host never takes that number for its own.
fn a_handed_descriptor_that_is_not_open_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (status, output) = handed_saying(&listener, 2, &[]).wait();
    assert!(!status.success(), "{output}");
    let expected = "wasi-tcp-host: error: descriptor 4, passed by the service manager, is not open";
    assert_eq!(output.trim(), expected);
}

fn a_handed_socket_no_grant_covers_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let other = crate::support::reserved_addr();
    let (status, output) = handed(&listener, &["--listen", &other.addr.to_string()]).wait();
    assert!(!status.success(), "{output}");
    let expected =
        format!("the service manager passed a listening socket on {addr} that no --listen grants");
    assert!(output.contains(&expected), "{output}");
}

struct Fd(std::os::fd::RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// SIGTERM (what systemd, Kubernetes and `docker stop` send) and SIGQUIT:
/// a graceful stop. No new clients; the ones connected are served until
/// they leave; then the host exits.
fn sigterm_serves_the_connected_clients_then_exits() {
    serves_the_connected_clients_then_exits(libc::SIGTERM);
}

fn sigquit_serves_the_connected_clients_then_exits() {
    serves_the_connected_clients_then_exits(libc::SIGQUIT);
}

fn serves_the_connected_clients_then_exits(signal: libc::c_int) {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "5m"]);
    let mut client = connect(host.listen_addr());
    assert!(echo(&mut client, b"before"));
    host.signal(signal);
    host.wait_for("stop: guest instance #1 takes no new clients; it serves its 1 until they leave");
    // A client arriving now is refused at once: the listener is closed.
    match TcpStream::connect(host.listen_addr()) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => {
            panic!("a client that came after signal {signal} got {other:?}\n{}", host.report())
        }
    }
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    drop(client);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("stop: guest instance #1 has no clients left; stopped it"), "{output}");
}

/// SIGQUIT under socket activation: the host stops accepting but leaves
/// the socket it was handed open, so that a client arriving meanwhile
/// waits there for the next start (systemd keeps the socket) rather than
/// being refused. Here the test plays systemd: it holds the socket, and
/// accepts the waiting client itself once the host has exited.
fn sigquit_leaves_a_handed_socket_queueing_new_clients() {
    let stopping = "stop: guest instance #1 takes no new clients";
    sigquit_leaves_a_handed_socket_queueing(&[], "guest listening on", stopping);
}

/// The same with one instance per client.
fn sigquit_leaves_a_handed_socket_queueing_with_per_client() {
    let guest = crate::support::guests::test_guest("echo-stdio");
    let args = ["--per-client", guest.to_str().unwrap()];
    let stopping = "SIGQUIT received: the listeners are closed";
    sigquit_leaves_a_handed_socket_queueing(&args, "per-client: listening on", stopping);
}

fn sigquit_leaves_a_handed_socket_queueing(args: &[&str], listening: &str, stopping: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let host = handed(&listener, &[&["--drain-timeout", "5m"], args].concat());
    host.wait_for(&format!("{listening} {addr}"));
    let mut served = connect(addr);
    assert!(echo(&mut served, b"before"), "{}", host.report());
    host.signal(libc::SIGQUIT);
    host.wait_for(stopping);
    let mut waiting = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("a client after SIGQUIT was refused: {e}\n{}", host.report()));
    waiting.write_all(b"queued").unwrap();
    assert!(echo(&mut served, b"still served"), "{}", host.report());
    drop(served);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    listener.set_nonblocking(true).unwrap();
    let (mut next_start, _) = listener.accept().expect("the waiting client, still queued");
    next_start.set_nonblocking(false).unwrap();
    next_start.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut queued = [0u8; 6];
    next_start.read_exact(&mut queued).unwrap();
    assert_eq!(&queued, b"queued");
}

fn sigquit_stops_a_client_that_stays_after_the_drain_timeout() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--drain-timeout", "200ms"]);
    let mut client = connect(host.listen_addr());
    assert!(echo(&mut client, b"staying"));
    host.signal(libc::SIGQUIT);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    let expected =
        "stop: guest instance #1 still had 1 clients after --drain-timeout 200ms; stopped it";
    assert!(output.contains(expected), "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        sighup_swaps_the_guest_without_closing_the_port,
        a_socket_handed_over_becomes_the_grant_and_the_listener,
        a_socket_handed_over_serves_its_grant_and_the_host_binds_nothing,
        a_handed_descriptor_that_is_not_a_listening_tcp_socket_is_a_clear_error,
        a_handed_descriptor_that_is_not_open_is_a_clear_error,
        a_handed_socket_no_grant_covers_is_a_clear_error,
        sigterm_serves_the_connected_clients_then_exits,
        sigquit_serves_the_connected_clients_then_exits,
        sigquit_leaves_a_handed_socket_queueing_new_clients,
        sigquit_leaves_a_handed_socket_queueing_with_per_client,
        sigquit_stops_a_client_that_stays_after_the_drain_timeout,
    ]
}
