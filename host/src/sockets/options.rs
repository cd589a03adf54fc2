//! Socket options: the wasi:sockets names, their WinSock names, and the
//! ranges the spec gives them.
//!
//! Every value travels as a `u64` (a flag is 0 or 1, a time is in
//! nanoseconds, a size in bytes). Zero is `invalid-argument` for every
//! option but the keep-alive flag; anything else is clamped to what the
//! system accepts, as the spec allows ("silently clamped and/or rounded").

use super::ErrorCode;
use socket2::{SockRef, TcpKeepalive};
use std::time::Duration;
use wasmtime_wasi::p2::bindings::sockets::network::IpAddressFamily;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    KeepAlive,
    KeepAliveIdleTime,
    KeepAliveInterval,
    KeepAliveCount,
    HopLimit,
    ReceiveBufferSize,
    SendBufferSize,
}

const ALL: [Opt; 7] = [
    Opt::KeepAlive,
    Opt::KeepAliveIdleTime,
    Opt::KeepAliveInterval,
    Opt::KeepAliveCount,
    Opt::HopLimit,
    Opt::ReceiveBufferSize,
    Opt::SendBufferSize,
];

/// Keep-alive times: at least a second (the unit the systems use), at most
/// Linux's limit, the lowest of the supported systems.
const KEEPALIVE_TIME: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(32767));
/// Keep-alive probes: Linux's limit, likewise.
const KEEPALIVE_COUNT: (u64, u64) = (1, 127);

impl Opt {
    /// The wasi:sockets name (without `set-`).
    pub fn wasi(self) -> &'static str {
        match self {
            Opt::KeepAlive => "keep-alive-enabled",
            Opt::KeepAliveIdleTime => "keep-alive-idle-time",
            Opt::KeepAliveInterval => "keep-alive-interval",
            Opt::KeepAliveCount => "keep-alive-count",
            Opt::HopLimit => "hop-limit",
            Opt::ReceiveBufferSize => "receive-buffer-size",
            Opt::SendBufferSize => "send-buffer-size",
        }
    }

    /// The option a WinSock or BSD program would pass to setsockopt.
    pub fn winsock(self, family: IpAddressFamily) -> &'static str {
        match (self, family) {
            (Opt::KeepAlive, _) => "SO_KEEPALIVE",
            (Opt::KeepAliveIdleTime, _) => "TCP_KEEPIDLE",
            (Opt::KeepAliveInterval, _) => "TCP_KEEPINTVL",
            (Opt::KeepAliveCount, _) => "TCP_KEEPCNT",
            (Opt::HopLimit, IpAddressFamily::Ipv4) => "IP_TTL",
            (Opt::HopLimit, IpAddressFamily::Ipv6) => "IPV6_UNICAST_HOPS",
            (Opt::ReceiveBufferSize, _) => "SO_RCVBUF",
            (Opt::SendBufferSize, _) => "SO_SNDBUF",
        }
    }

    fn index(self) -> usize {
        ALL.iter().position(|o| *o == self).unwrap_or_default()
    }
}

/// Reads an option.
pub fn get(socket: SockRef<'_>, family: IpAddressFamily, opt: Opt) -> Result<u64, ErrorCode> {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let value = match opt {
        Opt::KeepAlive => u64::from(socket.keepalive()?),
        Opt::KeepAliveIdleTime => nanos(keepalive_time(&socket)?),
        Opt::KeepAliveInterval => nanos(keepalive_interval(&socket)?),
        Opt::KeepAliveCount => u64::from(socket.tcp_keepalive_retries()?),
        Opt::HopLimit => u64::from(match family {
            IpAddressFamily::Ipv4 => socket.ttl_v4()?,
            IpAddressFamily::Ipv6 => socket.unicast_hops_v6()?,
        }),
        Opt::ReceiveBufferSize => buffer_size_read(socket.recv_buffer_size()?),
        Opt::SendBufferSize => buffer_size_read(socket.send_buffer_size()?),
    };
    Ok(value)
}

/// Sets an option, checking and clamping the value the way the spec says.
pub fn set(
    socket: SockRef<'_>,
    family: IpAddressFamily,
    opt: Opt,
    value: u64,
) -> Result<(), ErrorCode> {
    if value == 0 && opt != Opt::KeepAlive {
        return Err(ErrorCode::InvalidArgument);
    }
    let time = || Duration::from_nanos(value).clamp(KEEPALIVE_TIME.0, KEEPALIVE_TIME.1);
    let size = || usize::try_from(value.min(i32::MAX as u64)).unwrap_or(i32::MAX as usize);
    match opt {
        Opt::KeepAlive => socket.set_keepalive(value != 0)?,
        Opt::KeepAliveIdleTime => keepalive_param(&socket, TcpKeepalive::new().with_time(time()))?,
        Opt::KeepAliveInterval => {
            keepalive_param(&socket, TcpKeepalive::new().with_interval(time()))?
        }
        Opt::KeepAliveCount => {
            let count = value.clamp(KEEPALIVE_COUNT.0, KEEPALIVE_COUNT.1) as u32;
            keepalive_param(&socket, TcpKeepalive::new().with_retries(count))?
        }
        Opt::HopLimit => {
            let hops = u32::try_from(value).ok().filter(|h| *h <= 255);
            let hops = hops.ok_or(ErrorCode::InvalidArgument)?;
            match family {
                IpAddressFamily::Ipv4 => socket.set_ttl_v4(hops)?,
                IpAddressFamily::Ipv6 => socket.set_unicast_hops_v6(hops)?,
            }
        }
        Opt::ReceiveBufferSize => buffer_size_set(socket.set_recv_buffer_size(size()))?,
        Opt::SendBufferSize => buffer_size_set(socket.set_send_buffer_size(size()))?,
    }
    Ok(())
}

#[cfg(unix)]
fn keepalive_time(socket: &SockRef<'_>) -> std::io::Result<Duration> {
    socket.tcp_keepalive_time()
}

#[cfg(unix)]
fn keepalive_interval(socket: &SockRef<'_>) -> std::io::Result<Duration> {
    socket.tcp_keepalive_interval()
}

/// socket2 sets keep-alive times on Windows but does not read them:
/// TCP_KEEPIDLE and TCP_KEEPINTVL (Windows 10 1709 and later), in seconds.
#[cfg(windows)]
fn keepalive_time(socket: &SockRef<'_>) -> std::io::Result<Duration> {
    windows_seconds(socket, windows_sys::Win32::Networking::WinSock::TCP_KEEPIDLE)
}

#[cfg(windows)]
fn keepalive_interval(socket: &SockRef<'_>) -> std::io::Result<Duration> {
    windows_seconds(socket, windows_sys::Win32::Networking::WinSock::TCP_KEEPINTVL)
}

#[cfg(windows)]
fn windows_seconds(socket: &SockRef<'_>, option: i32) -> std::io::Result<Duration> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{getsockopt, IPPROTO_TCP};
    let mut seconds: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as i32;
    // SAFETY: getsockopt writes at most `len` bytes into `seconds`.
    let status = unsafe {
        getsockopt(
            socket.as_raw_socket() as usize,
            IPPROTO_TCP,
            option,
            (&mut seconds as *mut u32).cast(),
            &mut len,
        )
    };
    match status {
        0 => Ok(Duration::from_secs(u64::from(seconds))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// socket2 sets keep-alive parameters only together with SO_KEEPALIVE on;
/// the spec lets them be set while it is off, so its state is put back.
fn keepalive_param(socket: &SockRef<'_>, param: TcpKeepalive) -> std::io::Result<()> {
    let enabled = socket.keepalive()?;
    socket.set_tcp_keepalive(&param)?;
    if !enabled {
        socket.set_keepalive(false)?;
    }
    Ok(())
}

/// Linux doubles a buffer size as it is set (room for its bookkeeping) and
/// reports the doubled figure; halve it, so a guest reads back what it set.
fn buffer_size_read(reported: usize) -> u64 {
    let size = if cfg!(target_os = "linux") { reported / 2 } else { reported };
    size as u64
}

#[cfg(unix)]
const ENOBUFS: i32 = libc::ENOBUFS;
#[cfg(windows)]
const ENOBUFS: i32 = windows_sys::Win32::Networking::WinSock::WSAENOBUFS;

/// A buffer size is a hint: a system that finds it too large (ENOBUFS on
/// the BSDs) has not failed.
fn buffer_size_set(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(ENOBUFS) => Ok(()),
        other => other,
    }
}

/// The options a guest chose for a socket, so that they can follow it onto
/// a listener the host keeps (see `listeners.rs`). Only chosen ones: setting
/// a buffer size, even to the default, turns off Linux's automatic sizing.
#[derive(Clone, Default)]
pub struct Chosen([Option<u64>; ALL.len()]);

impl Chosen {
    pub fn record(&mut self, opt: Opt, value: u64) {
        self.0[opt.index()] = Some(value);
    }

    pub fn apply(&self, socket: SockRef<'_>, family: IpAddressFamily) -> Result<(), ErrorCode> {
        for (opt, value) in ALL.iter().zip(&self.0) {
            if let Some(value) = value {
                set(SockRef::from(&*socket), family, *opt, *value)?;
            }
        }
        Ok(())
    }
}
