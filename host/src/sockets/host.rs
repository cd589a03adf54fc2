//! The functions of `wasi:sockets/tcp` and `tcp-create-socket`, in the
//! order the WIT lists them. Each finds the guest's socket in the resource
//! table, lets `tcp.rs` do the work, and tells `--trace` what happened.

use super::bindings::wasi::sockets::tcp::{self, ShutdownType};
use super::bindings::wasi::sockets::tcp_create_socket;
use super::options::Opt;
use super::poll::WaitFor;
use super::streams::{Reader, Writer};
use super::tcp::{Op, TcpSocket};
use super::{ErrorCode, SocketsView};
use crate::trace::{outcome, policy};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{IpAddressFamily, IpSocketAddress, Network};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

/// A call's result for the guest: an error code, or a trap (a handle that
/// is not in the table, say) as the outer error.
type Answer<T> = wasmtime::Result<Result<T, ErrorCode>>;

impl SocketsView<'_> {
    fn socket(&mut self, this: &Resource<TcpSocket>) -> wasmtime::Result<&mut TcpSocket> {
        Ok(self.table.get_mut(this)?)
    }

    /// A trace line, built only with `--trace`.
    fn trace(&self, winsock: impl FnOnce() -> String, wasi: impl FnOnce() -> String) {
        if let Some(tracer) = &self.ctx.tracer {
            tracer.line(winsock(), wasi());
        }
    }

    /// An option read (getsockopt), traced.
    fn get(&mut self, this: Resource<TcpSocket>, opt: Opt) -> Answer<u64> {
        let socket = self.socket(&this)?;
        let (family, result) = (socket.family(), socket.option(opt));
        self.trace(
            || format!("getsockopt({})", opt.winsock(family)),
            || format!("tcp-socket.{} -> {}", opt.wasi(), outcome(&result, u64::to_string)),
        );
        Ok(result)
    }

    /// An option write (setsockopt), traced.
    fn set(&mut self, this: Resource<TcpSocket>, opt: Opt, value: u64) -> Answer<()> {
        let socket = self.socket(&this)?;
        let (family, result) = (socket.family(), socket.set_option(opt, value));
        self.trace(
            || format!("setsockopt({}, {value})", opt.winsock(family)),
            || format!("tcp-socket.set-{}({value}) -> {}", opt.wasi(), outcome(&result, ok)),
        );
        Ok(result)
    }

    /// finish-bind and finish-listen, traced.
    fn finish(&mut self, this: Resource<TcpSocket>, op: Op) -> Answer<()> {
        let result = self.socket(&this)?.finish(op);
        let (name, done) = match op {
            Op::Bind => ("finish-bind", "ok: bound"),
            _ => ("finish-listen", "ok: listening"),
        };
        self.trace(String::new, || {
            format!("tcp-socket.{name} -> {}", outcome(&result, |()| done.into()))
        });
        Ok(result)
    }

    /// Puts an accepted or connected socket's streams in the table. They
    /// are not the socket's children: dropping the socket first is allowed
    /// (the connection closes when the last of the three is dropped).
    fn push_streams(
        &mut self,
        reader: Reader,
        writer: Writer,
    ) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let conn = Arc::clone(reader.connection());
        let input = self.table.push(Box::new(reader) as DynInputStream)?;
        let output = self.table.push(Box::new(writer) as DynOutputStream)?;
        self.ctx.waits.stream(input.rep(), WaitFor::Readable(Arc::clone(&conn)));
        self.ctx.waits.stream(output.rep(), WaitFor::Writable(conn));
        Ok((input, output))
    }
}

fn ok(_: &()) -> String {
    "ok".into()
}

fn family_name(family: IpAddressFamily) -> &'static str {
    match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    }
}

impl tcp_create_socket::Host for SocketsView<'_> {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> Answer<Resource<TcpSocket>> {
        let created = TcpSocket::create(self.ctx, family);
        let result = match created {
            Ok(socket) => Ok(self.table.push(socket)?),
            Err(e) => Err(e),
        };
        self.trace(
            || "socket()".into(),
            || {
                let made = outcome(&result, |s| format!("tcp-socket#{}", s.rep()));
                format!("tcp-create-socket.create-tcp-socket({}) -> {made}", family_name(family))
            },
        );
        Ok(result)
    }
}

impl tcp::Host for SocketsView<'_> {}

impl tcp::HostTcpSocket for SocketsView<'_> {
    fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        addr: IpSocketAddress,
    ) -> Answer<()> {
        // The network handle is the capability to bind at all: it must be real.
        self.table.get(&network)?;
        let addr = SocketAddr::from(addr);
        let ctx = &*self.ctx;
        let result = self.table.get_mut(&this)?.start_bind(ctx, addr);
        self.trace(
            || format!("bind({addr})"),
            || {
                format!(
                    "tcp-socket.start-bind({addr}) -> {}{}",
                    outcome(&result, ok),
                    policy(&result)
                )
            },
        );
        Ok(result)
    }

    fn finish_bind(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        self.finish(this, Op::Bind)
    }

    fn start_connect(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        addr: IpSocketAddress,
    ) -> Answer<()> {
        self.table.get(&network)?;
        let addr = SocketAddr::from(addr);
        let ctx = &*self.ctx;
        let result = self.table.get_mut(&this)?.start_connect(ctx, addr);
        self.trace(
            || format!("connect({addr})"),
            || {
                format!(
                    "tcp-socket.start-connect({addr}) -> {}{}",
                    outcome(&result, ok),
                    policy(&result)
                )
            },
        );
        Ok(result)
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> Answer<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let ctx = &*self.ctx;
        let result = match self.table.get_mut(&this)?.finish_connect(ctx) {
            Ok((reader, writer)) => Ok(self.push_streams(reader, writer)?),
            Err(e) => Err(e),
        };
        self.trace(String::new, || {
            let made = outcome(&result, |(i, o)| {
                format!("connected: input-stream#{}, output-stream#{}", i.rep(), o.rep())
            });
            format!("tcp-socket.finish-connect -> {made}")
        });
        Ok(result)
    }

    fn start_listen(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        let ctx = &*self.ctx;
        let result = self.table.get_mut(&this)?.start_listen(ctx);
        // listen() shows on set-listen-backlog-size, which carries its argument.
        self.trace(String::new, || {
            format!("tcp-socket.start-listen -> {}{}", outcome(&result, ok), policy(&result))
        });
        Ok(result)
    }

    fn finish_listen(&mut self, this: Resource<TcpSocket>) -> Answer<()> {
        self.finish(this, Op::Listen)
    }

    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> Answer<(Resource<TcpSocket>, Resource<DynInputStream>, Resource<DynOutputStream>)> {
        let ctx = &*self.ctx;
        let result = match self.table.get_mut(&this)?.accept(ctx) {
            Ok((socket, reader, writer)) => {
                let peer = socket.remote_address().ok();
                let socket = self.table.push(socket)?;
                let (input, output) = self.push_streams(reader, writer)?;
                Ok(((socket, input, output), peer))
            }
            Err(e) => Err(e),
        };
        self.trace(
            || match &result {
                Ok((_, Some(peer))) => format!("accept() -> {peer}"),
                _ => "accept()".into(),
            },
            || {
                let made = outcome(&result, |((s, i, o), _)| {
                    format!(
                        "tcp-socket#{}, input-stream#{}, output-stream#{} [policy: client allowed]",
                        s.rep(),
                        i.rep(),
                        o.rep()
                    )
                });
                format!("tcp-socket.accept -> {made}")
            },
        );
        if result.is_ok() && self.ctx.nodelay {
            self.trace(
                || "setsockopt(TCP_NODELAY, 1)".into(),
                || "(not in wasi:sockets: the host sets it, see --nagle) -> ok".into(),
            );
        }
        Ok(result.map(|(accepted, _)| accepted))
    }

    fn local_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        let result = self.socket(&this)?.local_address();
        self.trace(
            || "getsockname()".into(),
            || format!("tcp-socket.local-address -> {}", outcome(&result, |a| a.to_string())),
        );
        Ok(result.map(Into::into))
    }

    fn remote_address(&mut self, this: Resource<TcpSocket>) -> Answer<IpSocketAddress> {
        let result = self.socket(&this)?.remote_address();
        self.trace(
            || "getpeername()".into(),
            || format!("tcp-socket.remote-address -> {}", outcome(&result, |a| a.to_string())),
        );
        Ok(result.map(Into::into))
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(self.socket(&this)?.is_listening())
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(self.socket(&this)?.family())
    }

    fn set_listen_backlog_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        let result = self.socket(&this)?.set_listen_backlog_size(value);
        self.trace(
            || format!("listen(backlog={value})"),
            || format!("tcp-socket.set-listen-backlog-size({value}) -> {}", outcome(&result, ok)),
        );
        Ok(result)
    }

    fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> Answer<bool> {
        Ok(self.get(this, Opt::KeepAlive)?.map(|v| v != 0))
    }

    fn set_keep_alive_enabled(&mut self, this: Resource<TcpSocket>, value: bool) -> Answer<()> {
        self.set(this, Opt::KeepAlive, value.into())
    }

    fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        self.get(this, Opt::KeepAliveIdleTime)
    }

    fn set_keep_alive_idle_time(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        self.set(this, Opt::KeepAliveIdleTime, value)
    }

    fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        self.get(this, Opt::KeepAliveInterval)
    }

    fn set_keep_alive_interval(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        self.set(this, Opt::KeepAliveInterval, value)
    }

    fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> Answer<u32> {
        let count = self.get(this, Opt::KeepAliveCount)?;
        Ok(count.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> Answer<()> {
        self.set(this, Opt::KeepAliveCount, value.into())
    }

    fn hop_limit(&mut self, this: Resource<TcpSocket>) -> Answer<u8> {
        let hops = self.get(this, Opt::HopLimit)?;
        Ok(hops.map(|n| u8::try_from(n).unwrap_or(u8::MAX)))
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> Answer<()> {
        self.set(this, Opt::HopLimit, value.into())
    }

    fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        self.get(this, Opt::ReceiveBufferSize)
    }

    fn set_receive_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        self.set(this, Opt::ReceiveBufferSize, value)
    }

    fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> Answer<u64> {
        self.get(this, Opt::SendBufferSize)
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> Answer<()> {
        self.set(this, Opt::SendBufferSize, value)
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        let socket = this.rep();
        let pollable = wasmtime_wasi::p2::subscribe(self.table, this)?;
        self.ctx.waits.pollable(pollable.rep(), WaitFor::Socket(socket));
        Ok(pollable)
    }

    fn shutdown(&mut self, this: Resource<TcpSocket>, how: ShutdownType) -> Answer<()> {
        let (winsock, wasi, how) = match how {
            ShutdownType::Receive => ("SD_RECEIVE", "receive", Shutdown::Read),
            ShutdownType::Send => ("SD_SEND", "send", Shutdown::Write),
            ShutdownType::Both => ("SD_BOTH", "both", Shutdown::Both),
        };
        let result = self.socket(&this)?.shutdown(how);
        self.trace(
            || format!("shutdown({winsock})"),
            || format!("tcp-socket.shutdown({wasi}) -> {}", outcome(&result, ok)),
        );
        Ok(result)
    }

    /// closesocket(). A socket with a pollable still alive cannot go (the
    /// spec lets a host trap there); its streams may outlive it. (A guest
    /// that crashes never gets here: its sockets go with its store.)
    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        let rep = this.rep();
        let socket = self.table.delete(this)?;
        if let Some((addr, reset)) = socket.close_kept_listener() {
            tracing::debug!(
                event = "listener-kept",
                %addr,
                "the guest closed its listener on {addr} ({reset} waiting clients reset); the host keeps the port open"
            );
        }
        drop(socket);
        self.trace(|| "closesocket()".into(), || format!("[drop] tcp-socket#{rep}"));
        Ok(())
    }
}
