//! listen() on each granted address, by the host itself: with an instance
//! per client the guest never sees a listener.

use crate::sockets::activation::Handed;
use crate::sockets::{bind_reserved, take_handed};
use anyhow::{bail, Context, Result};
use socket2::Socket;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The backlog clients wait in while every instance is busy.
const BACKLOG: i32 = 1024;

/// The listeners, and a copy of each for a new host (an upgrade), with
/// whether a service manager holds it too.
pub struct Opened {
    pub listeners: Vec<TcpListener>,
    pub handover: Vec<(Socket, bool)>,
}

/// A listener on each granted address: a socket a service manager (or the
/// host this one upgrades) handed over for it, or one bound now. One line
/// each says where.
pub fn open(grants: &[SocketAddr], mut handed: Vec<Handed>) -> Result<Opened> {
    let (mut listeners, mut handover) = (Vec::new(), Vec::new());
    for &grant in grants {
        let (socket, outlives) = match take_handed(&mut handed, grant) {
            Some(given) => (given.socket, given.outlives_host),
            None => (bind_reserved(grant)?, false),
        };
        handover.push((socket.try_clone().context("copying a listener")?, outlives));
        listeners.push(listen(socket).with_context(|| format!("cannot listen on {grant}"))?);
    }
    if let Some(extra) = handed.first() {
        bail!(
            "the service manager passed a listening socket on {} that no --listen grants",
            extra.addr
        );
    }
    Ok(Opened { listeners, handover })
}

fn listen(socket: Socket) -> std::io::Result<TcpListener> {
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket.into())?;
    let addr = listener.local_addr()?;
    tracing::info!(event = "listen", %addr, "per-client: listening on {addr}");
    Ok(listener)
}
