//! Clients for tests that keep a server busy: a stream of short-lived
//! clients, each doing one echo, counted (served, refused, failed).

use super::{Host, PATIENCE};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a client saw, counted across the clients of a test.
#[derive(Default)]
pub struct Tally {
    pub served: AtomicUsize,
    pub refused: AtomicUsize,
    pub failed: AtomicUsize,
}

/// One round trip on `client`; any error or wrong byte is a failure.
pub fn echo(client: &mut TcpStream, message: &[u8]) -> bool {
    let mut back = vec![0; message.len()];
    client.write_all(message).is_ok() && client.read_exact(&mut back).is_ok() && back == message
}

/// New clients, one after another until `stop`: connect, one echo, close.
pub fn stream_of_clients(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
    std::thread::spawn(move || {
        for i in 0.. {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let client = match TcpStream::connect_timeout(&addr, PATIENCE) {
                Ok(client) => client,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let mut client = super::with_timeouts(client);
            let counter = match echo(&mut client, format!("short-lived {i}\n").as_bytes()) {
                true => &tally.served,
                false => &tally.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Waits until `tally` has counted `more` served round trips beyond now.
pub fn served_more(tally: &Tally, more: usize, host: &Host) {
    let target = tally.served.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + PATIENCE;
    while tally.served.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "clients stopped being served\n{}", host.report());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The host closed `client` with a reset (before or after the guest saw it).
pub fn assert_reset(client: &mut TcpStream) {
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    match client.read(&mut [0u8; 1]) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset, got {other:?}"),
    }
}
