//! The built-in guest serves many clients at once, and no client can stall
//! another or make the guest buffer without bound.

use crate::support::traffic::reset;
use crate::support::{assert_echoes, connect, pattern, Host};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A few round trips on a fresh connection.
fn assert_round_trips(addr: SocketAddr) {
    let mut client = connect(addr);
    for i in 0..10 {
        let message = format!("round trip {i}");
        client.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
}

fn an_idle_client_does_not_block_another() {
    let (host, addr) = Host::serve(None);
    let idle = connect(addr);
    host.wait_for("client connected");
    assert_round_trips(addr);
    drop(idle);
}

/// Idle connections cost nothing: with 100 clients connected and silent,
/// the guest waits in one `poll` and no thread of the host runs at all, so
/// it is charged no CPU tick and wakes up not once in a second. (Measured
/// once the epoch ticker has parked: its last tick may still be running
/// when the clients fall silent.)
#[cfg(target_os = "linux")] // reads /proc
fn idle_connections_cost_no_cpu() {
    let (host, addr) = Host::serve(None);
    let clients: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut client = connect(addr);
            let hello = format!("client {i:03}");
            client.write_all(hello.as_bytes()).unwrap();
            client.read_exact(&mut vec![0u8; hello.len()]).unwrap();
            client
        })
        .collect();
    // The log's last summary of accepted clients is written when its
    // second is over (a timer): wait for it, then for the host to idle.
    host.wait_for_total("guest accepted a client", "accepted clients", 100);
    host.wait_until_idle();
    let (cpu, wakeups) = (host.cpu_time(), host.wakeups());
    // Not a wait for something to happen: the window in which nothing should.
    std::thread::sleep(Duration::from_secs(1));
    let used = host.cpu_time() - cpu;
    assert_eq!(used, Duration::ZERO, "CPU used in 1 s with 100 idle clients");
    // Nothing runs, so nothing needs interrupting: even the epoch ticker
    // (100 wake-ups a second while the guest computes) sleeps.
    let woke = host.wakeups().since(&wakeups);
    assert_eq!(woke, 0, "wake-ups in 1 s with 100 idle clients");
    assert_echoes(addr, b"still awake");
    drop(clients);
}

/// Writes without reading until the kernel refuses more: the client's send
/// buffer, the guest's buffer and the reply path are all full.
fn flood_until_full(client: &mut TcpStream) -> Vec<u8> {
    client.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024, 7);
    let mut sent = Vec::new();
    loop {
        match client.write(&chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("flooding: {e}"),
        }
    }
    client.set_nonblocking(false).unwrap();
    sent
}

fn a_client_flooding_without_reading_does_not_stall_another_and_loses_nothing() {
    let (_host, addr) = Host::serve(None);
    let mut flooder = connect(addr);
    let sent = flood_until_full(&mut flooder);
    assert!(sent.len() > 64 * 1024, "only {} bytes went out", sent.len());

    // While the flooder's pipeline is full, others are served.
    assert_round_trips(addr);
    assert_echoes(addr, &pattern(200_000, 8));

    // Nothing the flooder sent is lost: it reads back every byte, then EOF.
    flooder.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    flooder.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the flooder's echo differs");
}

fn two_hundred_and_fifty_clients_at_once_each_get_every_byte_back() {
    let (host, addr) = Host::serve(None);
    // Connect them all first, so that all are open at the same time...
    let clients: Vec<TcpStream> = (0..250).map(|_| connect(addr)).collect();
    host.wait_for_nth("client connected", 250);
    // ...then let each one echo from its own thread.
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            std::thread::spawn(move || {
                crate::support::assert_echoes_on(
                    client,
                    &pattern(20_000 + i, i as u64),
                    &[1000, 3000],
                )
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client failed");
    }
}

fn resets_before_accept_mid_stream_and_during_a_flood_leave_the_server_serving() {
    let (host, addr) = Host::serve(None);
    let bystander = connect(addr);

    // Before accept: connect and reset, many times, while the host is
    // stopped, so that every reset lands before the guest accepts.
    host.stopped_while(|| {
        for _ in 0..20 {
            reset(connect(addr));
        }
    });
    // Mid-stream: reset after part of the echo came back.
    let mut client = connect(addr);
    client.write_all(&pattern(50_000, 9)).unwrap();
    let mut some = [0u8; 1000];
    client.read_exact(&mut some).unwrap();
    reset(client);
    // During a flood: reset with the whole pipeline full.
    let mut flooder = connect(addr);
    flood_until_full(&mut flooder);
    reset(flooder);

    // A new client is accepted after all of those, and served.
    assert_round_trips(addr);
    // The client that was there all along is still served too.
    let mut bystander = bystander;
    bystander.write_all(b"still there?").unwrap();
    let mut back = [0u8; 12];
    bystander.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still there?");
}

fn flooding_clients_are_served_by_a_guest_held_to_3_mib() {
    // The guest needs about 1 MiB to start; 3 MiB leaves room for a few
    // 64 KiB buffers, not for megabytes of unsent data. A guest that
    // buffered without bound would trap here.
    let host = Host::start(&["--listen", "127.0.0.1:0", "--max-memory", "3MiB"]);
    let addr = host.listen_addr();
    let mut flooders: Vec<(TcpStream, Vec<u8>)> = (0..4)
        .map(|_| {
            let mut flooder = connect(addr);
            let sent = flood_until_full(&mut flooder);
            (flooder, sent)
        })
        .collect();
    assert_echoes(addr, &pattern(4 << 20, 12));
    for (flooder, sent) in &mut flooders {
        flooder.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        flooder.read_to_end(&mut echoed).unwrap();
        assert!(echoed == *sent, "a flooder's echo differs");
    }
    host.settled();
    assert!(
        !host.output().contains("refused: the guest asked to grow its memory"),
        "{}",
        host.output()
    );
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        an_idle_client_does_not_block_another,
        #[cfg(target_os = "linux")]
        idle_connections_cost_no_cpu [needs need::wchan()],
        a_client_flooding_without_reading_does_not_stall_another_and_loses_nothing,
        two_hundred_and_fifty_clients_at_once_each_get_every_byte_back,
        resets_before_accept_mid_stream_and_during_a_flood_leave_the_server_serving,
        flooding_clients_are_served_by_a_guest_held_to_3_mib,
    ]
}
