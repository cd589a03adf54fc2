//! The host's own `wasi:sockets/tcp` and `tcp-create-socket` (WASI 0.2.12):
//! the guest's TCP sockets, their streams and pollables, and the listeners
//! the host keeps across guest instances.
//!
//! wasmtime-wasi provides the rest of WASI (UDP, name lookups, clocks,
//! files, ...); these two interfaces are registered over its own. For TCP,
//! this is the one place where
//! - the operator's grants are checked ([`SocketsCtx::allowed`]), and each
//!   refusal and each use that succeeded is logged (the audit trail);
//! - the socket cap takes and gives back places (`cap.rs`);
//! - TCP_NODELAY is set on each accepted client (unless `--nagle`);
//! - `--trace` is told what happened (`crate::trace` formats it).
//!
//! | file | what |
//! | --- | --- |
//! | `host.rs` | the WIT functions, one by one, each traced |
//! | `tcp.rs` | a socket and its states (unbound, bound, listening, ...) |
//! | `listeners.rs` | listeners the host keeps, so they outlive a guest |
//! | `tenant.rs` | one guest instance: where it listens, how many clients it has |
//! | `streams.rs` | a connection's input and output streams |
//! | `options.rs` | socket options and their ranges |
//! | `addr.rs` | which addresses a socket may use |
//! | `cap.rs` | the socket cap (`--max-connections`) |
//! | `poll.rs` | `poll`, answered at once for the host's own pollables |
//! | `send.rs` | `write`, sent straight from the guest's memory |
//! | `io_trace.rs` | with `--trace`: `block` and `blocking-flush`, named |

pub mod activation;
mod addr;
mod cap;
mod host;
mod io_trace;
mod listeners;
mod options;
mod poll;
mod send;
mod streams;
mod tcp;
mod tenant;

pub use cap::SocketCap;
pub use listeners::Listeners;
pub use tcp::TcpSocket;
pub use tenant::Tenant;

use crate::policy::Grants;
use crate::trace::Tracer;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::sockets::SocketAddrUse;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package host:sockets;
            world tcp {
                import wasi:sockets/tcp@0.2.12;
                import wasi:sockets/tcp-create-socket@0.2.12;
            }
        ",
        world: "tcp",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/tcp.tcp-socket": super::TcpSocket,
        },
    });
}

/// What the sockets layer knows of one guest instance.
pub struct SocketsCtx {
    grants: Arc<Grants>,
    listeners: Arc<Listeners>,
    cap: Arc<SocketCap>,
    /// `--nagle` not given: TCP_NODELAY on every accepted client.
    nodelay: bool,
    tracer: Option<Tracer>,
    /// The host's own streams and pollables (`poll.rs`).
    watched: poll::Watched,
    /// This guest instance, as the listeners and the supervisor see it.
    tenant: Arc<Tenant>,
}

impl SocketsCtx {
    pub fn new(
        grants: Arc<Grants>,
        listeners: Arc<Listeners>,
        tenant: Arc<Tenant>,
        cap: Arc<SocketCap>,
        nodelay: bool,
        tracer: Option<Tracer>,
    ) -> Self {
        let watched = Default::default();
        SocketsCtx { grants, listeners, tenant, cap, nodelay, tracer, watched }
    }

    /// The grants' decision on one use of an address; a refusal is logged
    /// at once, an allowed use by [`SocketsCtx::done`] once it happened.
    fn allowed(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let allowed = self.grants.check(addr, use_);
        if !allowed {
            self.grants.log(addr, use_, false);
        }
        allowed
    }

    /// The audit line for an allowed use that succeeded.
    fn done(&self, addr: SocketAddr, use_: SocketAddrUse) {
        self.grants.log(addr, use_, true);
    }
}

/// The sockets layer's view of a guest's store: its context, and the
/// resource table the guest's handles point into.
pub struct SocketsView<'a> {
    pub ctx: &'a mut SocketsCtx,
    pub table: &'a mut ResourceTable,
}

/// A store whose guests use this TCP implementation.
pub trait HasTcp: Send + 'static {
    fn tcp(&mut self) -> SocketsView<'_>;
}

struct Sockets;

impl HasData for Sockets {
    type Data<'a> = SocketsView<'a>;
}

/// Registers `wasi:sockets/tcp` and `tcp-create-socket` over the ones
/// `wasmtime_wasi::p2::add_to_linker_async` added, and the wasi:io calls
/// that know the host's own pollables and streams (`poll.rs`, `send.rs`); with `--trace`, also
/// those the trace names (`io_trace.rs`).
pub fn add_to_linker<T: HasTcp>(linker: &mut Linker<T>, trace: bool) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    bindings::wasi::sockets::tcp::add_to_linker::<T, Sockets>(linker, T::tcp)?;
    bindings::wasi::sockets::tcp_create_socket::add_to_linker::<T, Sockets>(linker, T::tcp)?;
    poll::add_to_linker(linker)?;
    send::add_to_linker(linker)?;
    if trace {
        io_trace::add_to_linker(linker)?;
    }
    Ok(())
}
