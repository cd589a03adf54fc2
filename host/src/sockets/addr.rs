//! Addresses as wasi:sockets sees them: which ones a socket of a family may
//! use, and the error code for each way one is wrong.

use super::ErrorCode;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;

/// `0.0.0.0:0` or `[::]:0`: what a socket of this family is bound to
/// when it binds implicitly (say, on connect).
pub fn unspecified(family: IpAddressFamily) -> SocketAddr {
    let ip = match family {
        IpAddressFamily::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddressFamily::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// A local address for `bind`: the socket's family, unicast, and for IPv6
/// neither IPv4-mapped nor IPv4-compatible (sockets are IPv6-only).
pub fn check_local(addr: SocketAddr, family: IpAddressFamily) -> Result<(), ErrorCode> {
    match is_unicast(addr.ip()) && fits_family(addr.ip(), family) {
        true => Ok(()),
        false => Err(ErrorCode::InvalidArgument),
    }
}

/// A remote address for `connect`: as for `bind`, and neither the
/// unspecified address nor port 0.
pub fn check_remote(addr: SocketAddr, family: IpAddressFamily) -> Result<(), ErrorCode> {
    check_local(addr, family)?;
    match addr.ip().to_canonical().is_unspecified() || addr.port() == 0 {
        true => Err(ErrorCode::InvalidArgument),
        false => Ok(()),
    }
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => !ip.is_multicast() && !ip.is_broadcast(),
        IpAddr::V6(ip) => !ip.is_multicast(),
    }
}

fn fits_family(ip: IpAddr, family: IpAddressFamily) -> bool {
    match (family, ip) {
        (IpAddressFamily::Ipv4, IpAddr::V4(_)) => true,
        (IpAddressFamily::Ipv6, IpAddr::V6(ip)) => {
            // `::a.b.c.d` (deprecated since 2006) is treated inconsistently by
            // systems; `::ffff:a.b.c.d` would reach IPv4 from an IPv6-only socket.
            let ipv4_compatible = matches!(ip.segments(), [0, 0, 0, 0, 0, 0, _, _])
                && ip != Ipv6Addr::UNSPECIFIED
                && ip != Ipv6Addr::LOCALHOST;
            !ipv4_compatible && ip.to_ipv4_mapped().is_none()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, family: IpAddressFamily) -> (bool, bool) {
        let addr = text.parse().unwrap();
        (check_local(addr, family).is_ok(), check_remote(addr, family).is_ok())
    }

    #[test]
    fn local_and_remote_addresses() {
        use IpAddressFamily::{Ipv4, Ipv6};
        assert_eq!(check("127.0.0.1:9000", Ipv4), (true, true));
        assert_eq!(check("0.0.0.0:9000", Ipv4), (true, false));
        assert_eq!(check("127.0.0.1:0", Ipv4), (true, false));
        assert_eq!(check("[::1]:9000", Ipv4), (false, false));
        assert_eq!(check("127.0.0.1:9000", Ipv6), (false, false));
        assert_eq!(check("255.255.255.255:9000", Ipv4), (false, false));
        assert_eq!(check("224.0.0.1:9000", Ipv4), (false, false));
        assert_eq!(check("[ff02::1]:9000", Ipv6), (false, false));
        assert_eq!(check("[::ffff:127.0.0.1]:9000", Ipv6), (false, false));
        assert_eq!(check("[::127.0.0.1]:9000", Ipv6), (false, false));
        assert_eq!(check("[::]:9000", Ipv6), (true, false));
        assert_eq!(check("[::1]:9000", Ipv6), (true, true));
    }
}
