//! What the operator granted, and the one check every socket use passes.
//!
//! [`Grants::check`] decides each bind, listen, accept, connect and UDP use:
//! the host's own TCP calls it (`sockets/`), so does the per-client accept
//! loop (`per_client/client.rs`), and wasmtime-wasi for UDP (its address
//! check, installed by `sandbox.rs`). Anything not granted is refused with
//! `access-denied`; `audit.rs` writes the decision to the log, with the
//! words this module gives ([`describe`], [`Grants::how_to_grant`]).

use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The network a guest may use. Everything absent here is denied.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Addresses the guest may bind and listen on. Port 0 grants the one
    /// port the system picks when the guest binds port 0.
    pub listen: Vec<SocketAddr>,
    /// Where the guest may open outbound TCP connections.
    pub connect: Vec<NetRule>,
    /// Clients that may reach the guest; empty means every client.
    pub clients: Vec<IpNet>,
    /// Whether the guest may use UDP at all.
    pub udp: bool,
    /// Whether the guest may resolve names (wasi:sockets/ip-name-lookup).
    pub dns: bool,
    /// The host's own metrics address (`--metrics`): no grant reaches it.
    pub host_only: Option<SocketAddr>,
}

impl Grants {
    /// Decides one use of one address (`log` records the decision).
    pub fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        match use_ {
            // Binding the wildcard address on a system-picked port grants
            // nothing by itself (listen and connect are checked again), and
            // it is what connect() does implicitly: allowing it lets the
            // connect check below name the real destination.
            SocketAddrUse::TcpBind => self.listen.contains(&addr) || is_any_port_wildcard(addr),
            SocketAddrUse::TcpListen => {
                self.listen.iter().any(|granted| listen_matches(*granted, addr))
            }
            SocketAddrUse::TcpAccept => {
                self.clients.is_empty() || self.clients.iter().any(|net| net.contains(&addr.ip()))
            }
            SocketAddrUse::TcpConnect => {
                !self.is_host_only(addr) && self.connect.iter().any(|rule| rule.matches(addr))
            }
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => self.udp,
        }
    }

    /// The host's metrics address (every address on its port, if it
    /// listens on all of them).
    fn is_host_only(&self, addr: SocketAddr) -> bool {
        self.host_only.is_some_and(|own| {
            own.port() == addr.port() && (own.ip().is_unspecified() || own.ip() == addr.ip())
        })
    }

    /// Which option would grant a use the policy refused, in words.
    pub fn how_to_grant(&self, addr: SocketAddr, use_: SocketAddrUse) -> String {
        if matches!(use_, SocketAddrUse::TcpConnect) && self.is_host_only(addr) {
            return "it is the host's own metrics address, which no grant reaches".to_string();
        }
        match use_ {
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => {
                format!("{}; grant it with --listen {addr}", self.granted_listen())
            }
            SocketAddrUse::TcpConnect => {
                format!("outbound connections are not granted there; grant this one with --allow-connect {addr}")
            }
            SocketAddrUse::TcpAccept => {
                format!(
                    "the client is not in --allow-client; let it in with --allow-client {}",
                    addr.ip()
                )
            }
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

    /// One line for the start-up log: what is granted.
    pub fn summary(&self) -> String {
        let mut parts = match self.listen.is_empty() {
            true => vec!["no listen address".to_string()],
            false => vec![format!("listen on {}", join(&self.listen))],
        };
        if !self.clients.is_empty() {
            parts.push(format!("clients from {}", join(&self.clients)));
        }
        if !self.connect.is_empty() {
            parts.push(format!("connect to {}", join(&self.connect)));
        }
        if self.udp {
            parts.push("UDP".to_string());
        }
        if self.dns {
            parts.push("name lookups".to_string());
        }
        parts.join("; ")
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// `0.0.0.0:0` or `[::]:0`: the address a connect() binds to implicitly.
pub fn is_any_port_wildcard(addr: SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

/// A listener's real address against a grant: the same IP, and the same
/// port unless the grant let the system pick one (port 0).
fn listen_matches(granted: SocketAddr, actual: SocketAddr) -> bool {
    granted.ip() == actual.ip() && (granted.port() == 0 || granted.port() == actual.port())
}

/// What a use of an address is, in words: "TCP bind to".
pub fn describe(use_: SocketAddrUse) -> &'static str {
    match use_ {
        SocketAddrUse::TcpBind => "TCP bind to",
        SocketAddrUse::TcpListen => "TCP listen on",
        SocketAddrUse::TcpAccept => "TCP client from",
        SocketAddrUse::TcpConnect => "TCP connect to",
        SocketAddrUse::UdpBind => "UDP bind to",
        SocketAddrUse::UdpSend => "UDP send to",
        SocketAddrUse::UdpReceive => "UDP receive from",
    }
}

/// Outbound destinations: `IP:PORT`, `CIDR:PORT`, `CIDR:LOW-HIGH`,
/// `[IPv6]:PORT`, or `HOST:PORT` (the host name is resolved once, when the
/// host starts). `*` as the port means any port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct NetRule {
    text: String,
    nets: Vec<IpNet>,
    ports: RangeInclusive<u16>,
}

impl NetRule {
    pub fn matches(&self, addr: SocketAddr) -> bool {
        self.ports.contains(&addr.port()) && self.nets.iter().any(|net| net.contains(&addr.ip()))
    }
}

impl FromStr for NetRule {
    type Err = String;
    fn from_str(text: &str) -> Result<NetRule, String> {
        let bad = || format!("`{text}` is not HOST:PORT, IP:PORT or CIDR:PORT-PORT");
        let (host, ports) = match text.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").ok_or_else(bad)?,
            None => text.rsplit_once(':').ok_or_else(bad)?,
        };
        let ports = match ports.split_once('-') {
            _ if ports == "*" => 0..=u16::MAX,
            Some((low, high)) => {
                low.parse().map_err(|_| bad())?..=high.parse().map_err(|_| bad())?
            }
            None => {
                let port: u16 = ports.parse().map_err(|_| bad())?;
                port..=port
            }
        };
        let nets = if let Ok(net) = host.parse::<IpNet>() {
            vec![net]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![IpNet::from(ip)]
        } else {
            let resolved = (host, 0)
                .to_socket_addrs()
                .map_err(|e| format!("`{text}`: cannot resolve {host}: {e}"))?;
            resolved.map(|a| IpNet::from(a.ip())).collect()
        };
        Ok(NetRule { text: text.to_string(), nets, ports })
    }
}

impl TryFrom<String> for NetRule {
    type Error = String;
    fn try_from(text: String) -> Result<NetRule, String> {
        text.parse()
    }
}

impl std::fmt::Display for NetRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A directory for the guest: `HOST[::GUEST]`, read-only unless `:rw`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl FromStr for DirGrant {
    type Err = String;
    fn from_str(text: &str) -> Result<DirGrant, String> {
        let (paths, writable) = match text.rsplit_once(':') {
            Some((paths, "rw")) if !paths.ends_with(':') => (paths, true),
            Some((paths, "ro")) if !paths.ends_with(':') => (paths, false),
            _ => (text, false),
        };
        let (host, guest) = paths.split_once("::").unwrap_or((paths, paths));
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{text}` is not HOST[::GUEST][:rw]"));
        }
        Ok(DirGrant { host: host.into(), guest: guest.to_string(), writable })
    }
}

impl TryFrom<String> for DirGrant {
    type Error = String;
    fn try_from(text: String) -> Result<DirGrant, String> {
        text.parse()
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
    fn a_wildcard_bind_on_port_zero_grants_no_listener() {
        let g = listen_only("127.0.0.1:0");
        assert!(g.check(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(g.check(addr("[::]:0"), SocketAddrUse::TcpBind));
        assert!(!g.check(addr("0.0.0.0:40000"), SocketAddrUse::TcpListen));
        assert!(!g.check(addr("[::]:40000"), SocketAddrUse::TcpListen));
    }

    #[test]
    fn connect_rules_cover_their_networks_and_ports_only() {
        let rules = ["127.0.0.1:5432", "10.0.0.0/8:8000-8099", "[::1]:*", "localhost:7000"];
        let g = Grants {
            connect: rules.iter().map(|r| r.parse().unwrap()).collect(),
            ..listen_only("0.0.0.0:9000")
        };
        for ok in
            ["127.0.0.1:5432", "10.1.2.3:8000", "10.255.0.1:8099", "[::1]:1", "127.0.0.1:7000"]
        {
            assert!(g.check(addr(ok), SocketAddrUse::TcpConnect), "{ok}");
        }
        for no in ["127.0.0.1:5433", "10.1.2.3:8100", "11.0.0.1:8000", "[::2]:1"] {
            assert!(!g.check(addr(no), SocketAddrUse::TcpConnect), "{no}");
        }
    }

    #[test]
    fn client_networks_filter_accepted_clients() {
        let g =
            Grants { clients: vec!["127.0.0.0/8".parse().unwrap()], ..listen_only("0.0.0.0:9000") };
        assert!(g.check(addr("127.0.0.1:5555"), SocketAddrUse::TcpAccept));
        assert!(!g.check(addr("192.168.1.2:5555"), SocketAddrUse::TcpAccept));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["127.0.0.1", "10.0.0.0/8:x", "[::1]80", ":80"] {
            assert!(bad.parse::<NetRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dir_grants() {
        let d: DirGrant = "/srv/data".parse().unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest.as_str(), d.writable),
            ("/srv/data", "/srv/data", false)
        );
        let d: DirGrant = "/tmp/out::/out:rw".parse().unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest.as_str(), d.writable),
            ("/tmp/out", "/out", true)
        );
        let d: DirGrant = "/a::/b:ro".parse().unwrap();
        assert!(!d.writable && d.guest == "/b");
    }
}
