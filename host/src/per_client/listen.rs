//! listen() on each granted address, by the host itself: with an instance
//! per client the guest never sees a listener.

use crate::sockets::activation::Handed;
use crate::sockets::bind_reserved;
use anyhow::{bail, Context, Result};
use socket2::Socket;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The backlog clients wait in while every instance is busy.
const BACKLOG: i32 = 1024;

/// A listener on each granted address: a socket a service manager handed
/// over for it, or one bound now. One line each says where.
pub fn open(grants: &[SocketAddr], mut handed: Vec<Handed>) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for &grant in grants {
        let socket = match handed.iter().position(|h| h.addr == grant) {
            Some(at) => handed.swap_remove(at).socket,
            None => bind_reserved(grant)?,
        };
        listeners.push(listen(socket).with_context(|| format!("cannot listen on {grant}"))?);
    }
    if let Some(extra) = handed.first() {
        bail!(
            "the service manager passed a listening socket on {} that no --listen grants",
            extra.addr
        );
    }
    Ok(listeners)
}

fn listen(socket: Socket) -> std::io::Result<TcpListener> {
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket.into())?;
    let addr = listener.local_addr()?;
    tracing::info!(event = "listen", %addr, "per-client: listening on {addr}");
    Ok(listener)
}
