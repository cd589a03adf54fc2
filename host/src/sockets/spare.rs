//! A descriptor kept in reserve, so that a client can still be turned away
//! when the process has run out of descriptors (its open-file limit is
//! below `--max-connections`, say). Without it, `accept` fails with EMFILE
//! and the client waits in the backlog for ever, its listener always
//! "ready", the guest spinning on it. With it, the host closes the spare,
//! accepts the client into the freed descriptor, resets it, and takes the
//! spare again: the libev/nginx way.

use crate::log_limit::{Kind, LogLines};
use crate::metrics::{self, TurnedAway};
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A UDP socket: it needs no file system (the container image has none).
static SPARE: Mutex<Option<Socket>> = Mutex::new(None);
static TURNED_AWAY: Kind =
    Kind::warn(LogLines::TurnedAwayNoDescriptor, "clients turned away for want of descriptors");

/// Whether an accept failed for want of descriptors: EMFILE or ENFILE on
/// Unix; WSAEMFILE or WSAENOBUFS (out of memory for sockets) on Windows.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    #[cfg(windows)]
    {
        use windows_sys::Win32::Networking::WinSock::{WSAEMFILE, WSAENOBUFS};
        return matches!(e.raw_os_error(), Some(WSAEMFILE | WSAENOBUFS));
    }
}

/// Takes the spare descriptor (again).
pub fn reserve() {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if spare.is_none() {
        *spare = Socket::new(Domain::IPV4, Type::DGRAM, None).ok();
    }
}

/// The process is out of descriptors: turns away the next client waiting
/// on `listener` with a reset. Returns whether there was one.
pub fn turn_away_one(listener: &Socket) -> bool {
    drop(SPARE.lock().unwrap_or_else(|e| e.into_inner()).take());
    let accepted = listener.accept();
    let turned_away = match accepted {
        Ok((client, peer)) => {
            let _ = client.set_linger(Some(Duration::ZERO));
            metrics::turned_away(TurnedAway::NoDescriptor);
            log(peer.as_socket());
            true
        }
        Err(_) => false,
    };
    reserve();
    turned_away
}

fn log(peer: Option<SocketAddr>) {
    if !TURNED_AWAY.admit() {
        return;
    }
    let peer = peer.map_or_else(|| "somewhere".to_string(), |p| p.to_string());
    let limit = crate::settings::open_file_limit().map_or("none".to_string(), |l| l.to_string());
    tracing::warn!(
        event = "limit",
        "refused: a client from {peer}, turned away: the process has no descriptor left \
         (its open-file limit is {limit}); raise that limit or lower --max-connections"
    );
}
