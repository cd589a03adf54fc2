//! The audit trail: one log line for each decision of the grants
//! (`policy.rs`) on a use of an address. Every refusal says what was tried,
//! where, and which option would grant it; allowed binds, listens, accepts,
//! connects and UDP binds are logged too. A guest or a client can cause
//! these at will, so each kind is written at most ten times a second, and
//! the rest counted (`log_limit.rs`).

use crate::log_limit::{Kind, LogLines};
use crate::policy::{describe, is_any_port_wildcard, Grants};
use std::net::SocketAddr;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The audit line for one decision of `grants` on `addr`.
pub fn log(grants: &Grants, addr: SocketAddr, use_: SocketAddrUse, allowed: bool) {
    if audit_kind(use_, allowed, addr).is_some_and(|kind| !kind.admit()) {
        return;
    }
    let what = describe(use_);
    match (allowed, use_) {
        (true, SocketAddrUse::TcpBind) if !is_any_port_wildcard(addr) => {
            tracing::info!(event = "bind", %addr, "guest bound {addr}")
        }
        (true, SocketAddrUse::TcpListen) => {
            tracing::info!(event = "listen", %addr, "guest listening on {addr}")
        }
        (true, SocketAddrUse::TcpAccept) => {
            tracing::info!(event = "accept", peer = %addr, "guest accepted a client from {addr}")
        }
        (true, SocketAddrUse::TcpConnect) => {
            tracing::info!(event = "connect", %addr, "guest connecting to {addr}")
        }
        (true, SocketAddrUse::UdpBind) => {
            tracing::info!(event = "udp-bind", %addr, "guest bound UDP {addr}")
        }
        // Per datagram (and the implicit bind of a connect): too many
        // to log by default.
        (true, _) => tracing::debug!(event = "allowed", %addr, "allowed: {what} {addr}"),
        (false, _) => tracing::warn!(
            event = "denied",
            %addr,
            "denied: {what} {addr} ({})",
            grants.how_to_grant(addr, use_)
        ),
    }
}

/// The kind an audit line counts as, for the log's rate limit; None for
/// the lines only `RUST_LOG=debug` shows (not limited: asked for).
fn audit_kind(use_: SocketAddrUse, allowed: bool, addr: SocketAddr) -> Option<&'static Kind> {
    static BOUND: Kind = Kind::info(LogLines::Bind, "binds");
    static LISTENING: Kind = Kind::info(LogLines::Listen, "listens");
    static ACCEPTED: Kind = Kind::info(LogLines::Accept, "accepted clients");
    static CONNECTING: Kind = Kind::info(LogLines::Connect, "connects");
    static UDP_BOUND: Kind = Kind::info(LogLines::UdpBind, "UDP binds");
    static DENIED_BINDS: Kind = Kind::warn(LogLines::BindDenied, "denied TCP binds");
    static DENIED_LISTENS: Kind = Kind::warn(LogLines::ListenDenied, "denied TCP listens");
    static DENIED_CLIENTS: Kind = Kind::warn(LogLines::ClientDenied, "denied TCP clients");
    static DENIED_CONNECTS: Kind = Kind::warn(LogLines::ConnectDenied, "denied TCP connects");
    static DENIED_UDP: Kind = Kind::warn(LogLines::UdpDenied, "denied UDP uses");
    let kind = match (allowed, use_) {
        (true, SocketAddrUse::TcpBind) if !is_any_port_wildcard(addr) => &BOUND,
        (true, SocketAddrUse::TcpListen) => &LISTENING,
        (true, SocketAddrUse::TcpAccept) => &ACCEPTED,
        (true, SocketAddrUse::TcpConnect) => &CONNECTING,
        (true, SocketAddrUse::UdpBind) => &UDP_BOUND,
        (true, _) => return None,
        (false, SocketAddrUse::TcpBind) => &DENIED_BINDS,
        (false, SocketAddrUse::TcpListen) => &DENIED_LISTENS,
        (false, SocketAddrUse::TcpAccept) => &DENIED_CLIENTS,
        (false, SocketAddrUse::TcpConnect) => &DENIED_CONNECTS,
        (false, _) => &DENIED_UDP,
    };
    Some(kind)
}
