//! What the operator granted, and the one check every socket use passes.
//!
//! wasmtime-wasi calls [`Grants::check`] before each bind, listen, accept,
//! connect and UDP use. Anything not granted is refused with
//! `access-denied`, and the host says so in one log line that names the
//! option which would grant it.

use std::net::SocketAddr;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The network a guest may use. Everything absent here is denied.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Addresses the guest may bind and listen on. Port 0 grants the one
    /// port the system picks when the guest binds port 0.
    pub listen: Vec<SocketAddr>,
    /// Addresses the guest may open outbound TCP connections to.
    pub connect: Vec<SocketAddr>,
    /// Whether the guest may use UDP at all.
    pub udp: bool,
    /// Whether the guest may resolve names (wasi:sockets/ip-name-lookup).
    pub dns: bool,
}

impl Grants {
    /// Decides one use of one address, and logs the decision.
    pub fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let allowed = match use_ {
            // Binding the wildcard address on a system-picked port grants
            // nothing by itself (listen and connect are checked again), and
            // it is what connect() does implicitly: allowing it lets the
            // connect check below name the real destination.
            SocketAddrUse::TcpBind => self.listen.contains(&addr) || is_any_port_wildcard(addr),
            SocketAddrUse::TcpListen => {
                self.listen.iter().any(|granted| listen_matches(*granted, addr))
            }
            SocketAddrUse::TcpAccept => true,
            SocketAddrUse::TcpConnect => self.connect.contains(&addr),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => self.udp,
        };
        let what = describe(use_);
        match (allowed, use_) {
            (true, SocketAddrUse::TcpListen) => tracing::info!("guest listening on {addr}"),
            (true, SocketAddrUse::TcpConnect) => tracing::info!("guest connecting to {addr}"),
            (true, SocketAddrUse::TcpAccept) => {
                tracing::debug!("guest accepting a client from {addr}")
            }
            (true, _) => tracing::debug!("allowed: {what} {addr}"),
            (false, _) => {
                tracing::warn!("denied: {what} {addr} ({})", self.how_to_grant(addr, use_))
            }
        }
        allowed
    }

    fn how_to_grant(&self, addr: SocketAddr, use_: SocketAddrUse) -> String {
        match use_ {
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => {
                format!("{}; grant it with --listen {addr}", self.granted_listen())
            }
            SocketAddrUse::TcpConnect => {
                format!("outbound connections are not granted; grant this one with --allow-connect {addr}")
            }
            SocketAddrUse::TcpAccept => "this client is not allowed".to_string(),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                "UDP is not granted; grant it with --allow-udp".to_string()
            }
        }
    }

    fn granted_listen(&self) -> String {
        let list: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        match list.as_slice() {
            [] => "no listen address is granted".to_string(),
            _ => format!("the guest may only listen on {}", list.join(", ")),
        }
    }
}

/// `0.0.0.0:0` or `[::]:0`: the address a connect() binds to implicitly.
fn is_any_port_wildcard(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

/// A listener's real address against a grant: the same IP, and the same
/// port unless the grant let the system pick one (port 0).
fn listen_matches(granted: SocketAddr, actual: SocketAddr) -> bool {
    granted.ip() == actual.ip() && (granted.port() == 0 || granted.port() == actual.port())
}

fn describe(use_: SocketAddrUse) -> &'static str {
    match use_ {
        SocketAddrUse::TcpBind => "TCP bind to",
        SocketAddrUse::TcpListen => "TCP listen on",
        SocketAddrUse::TcpAccept => "TCP accept from",
        SocketAddrUse::TcpConnect => "TCP connect to",
        SocketAddrUse::UdpBind => "UDP bind to",
        SocketAddrUse::UdpSend => "UDP send to",
        SocketAddrUse::UdpReceive => "UDP receive from",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn listen_only(s: &str) -> Grants {
        Grants { listen: vec![addr(s)], ..Grants::default() }
    }

    #[test]
    fn listen_grant_covers_its_bind_and_listen_only() {
        let g = listen_only("0.0.0.0:9000");
        assert!(g.check(addr("0.0.0.0:9000"), SocketAddrUse::TcpBind));
        assert!(g.check(addr("0.0.0.0:9000"), SocketAddrUse::TcpListen));
        assert!(!g.check(addr("0.0.0.0:9001"), SocketAddrUse::TcpBind));
        assert!(!g.check(addr("127.0.0.1:9000"), SocketAddrUse::TcpBind));
        assert!(!g.check(addr("[::]:9000"), SocketAddrUse::TcpBind));
    }

    #[test]
    fn port_zero_grants_the_system_picked_port_on_that_ip() {
        let g = listen_only("127.0.0.1:0");
        assert!(g.check(addr("127.0.0.1:0"), SocketAddrUse::TcpBind));
        assert!(!g.check(addr("127.0.0.1:8080"), SocketAddrUse::TcpBind));
        assert!(g.check(addr("127.0.0.1:43210"), SocketAddrUse::TcpListen));
        assert!(!g.check(addr("0.0.0.0:43210"), SocketAddrUse::TcpListen));
    }

    #[test]
    fn nothing_else_is_granted_by_default() {
        let g = listen_only("0.0.0.0:9000");
        assert!(!g.check(addr("127.0.0.1:80"), SocketAddrUse::TcpConnect));
        assert!(!g.check(addr("0.0.0.0:43210"), SocketAddrUse::TcpListen));
        assert!(!g.check(addr("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(!g.check(addr("8.8.8.8:53"), SocketAddrUse::UdpSend));
        assert!(g.check(addr("10.0.0.7:5555"), SocketAddrUse::TcpAccept));
    }

    #[test]
    fn connect_grant_covers_its_address_only() {
        let g = Grants { connect: vec![addr("127.0.0.1:5432")], ..listen_only("0.0.0.0:9000") };
        assert!(g.check(addr("127.0.0.1:5432"), SocketAddrUse::TcpConnect));
        assert!(!g.check(addr("127.0.0.1:5433"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn a_wildcard_bind_on_port_zero_grants_no_listener() {
        let g = listen_only("127.0.0.1:0");
        assert!(g.check(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(g.check(addr("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!g.check(addr("0.0.0.0:40000"), SocketAddrUse::TcpListen));
        assert!(!g.check(addr("[::]:40000"), SocketAddrUse::TcpListen));
    }
}
