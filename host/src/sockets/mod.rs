//! The host's own `wasi:sockets/tcp` and `tcp-create-socket` (WASI 0.2):
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
//! | `tcp.rs` | a socket: its one state enum and each transition |
//! | `listeners.rs` | listeners the host keeps, so they outlive a guest |
//! | `listener.rs` | one listener, waited on without accepting (Unix, Windows) |
//! | `tenant.rs` | one guest instance: where it listens, how many clients it has |
//! | `connection.rs` | a connection: what it owns, its sending side (check-write's permit, a send now, the rest in the background), idle clients |
//! | `streams.rs` | the input and output stream handles on a connection |
//! | `stdio.rs` | a client's connection as stdin and stdout (`--per-client`) |
//! | `options.rs` | socket options and their ranges |
//! | `addr.rs` | which addresses a socket may use |
//! | `cap.rs` | the socket cap (`--max-connections`) |
//! | `spare.rs` | a descriptor in reserve, to turn clients away when there are none left |
//! | `poll.rs` | `poll`, answered at once for the host's own pollables |
//! | `send.rs` | `write`, sent straight from the guest's memory |
//! | `io_trace.rs` | with `--trace`: `block` and `blocking-flush`, named |

pub mod activation;
mod addr;
mod cap;
mod connection;
mod host;
mod io_trace;
mod listener;
mod listeners;
mod options;
mod poll;
mod read_wake;
mod send;
pub mod spare;
mod stdio;
mod streams;
mod tcp;
mod tenant;

pub use cap::{Asker, Cap, Caps, Place};
pub use connection::{Connection, Owner, Timeouts};
pub use listeners::{bind_reserved, take_handed, Listeners};
pub use stdio::{ClientStdio, TrialStdio};
pub use tcp::TcpSocket;
pub use tenant::Tenant;

use crate::policy::Grants;
use crate::trace::Tracer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::sockets::SocketAddrUse;

mod bindings {
    // The version here must be `crate::wasi_version::WASI_VERSION` (a test
    // below checks): a macro takes no constant.
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
    cap: Arc<Cap>,
    /// `--nagle` not given: TCP_NODELAY on every accepted client.
    nodelay: bool,
    tracer: Option<Tracer>,
    /// The host's own streams and pollables (`poll.rs`).
    waits: poll::Waits,
    /// This guest instance, as the listeners and the supervisor see it.
    tenant: Arc<Tenant>,
    timeouts: Timeouts,
    /// Dropped with the instance's store: what the host still does for
    /// its connections on its own (`connection.rs`) stops then.
    instance: watch::Sender<()>,
    /// Places a stream keeps while it lives, by the stream's handle: a
    /// file's stream holds the file open after its descriptor is dropped.
    held_by_streams: std::collections::HashMap<u32, Arc<Place>>,
}

/// How the sockets layer treats one guest instance's sockets.
pub struct Options {
    /// `--nagle` not given: TCP_NODELAY on every accepted client.
    pub nodelay: bool,
    pub tracer: Option<Tracer>,
    pub timeouts: Timeouts,
}

impl SocketsCtx {
    pub fn new(
        grants: Arc<Grants>,
        listeners: Arc<Listeners>,
        tenant: Arc<Tenant>,
        cap: Arc<Cap>,
        options: Options,
    ) -> Self {
        let Options { nodelay, tracer, timeouts } = options;
        let (waits, instance) = (Default::default(), watch::Sender::new(()));
        let held_by_streams = Default::default();
        SocketsCtx {
            grants,
            listeners,
            tenant,
            cap,
            nodelay,
            tracer,
            waits,
            timeouts,
            instance,
            held_by_streams,
        }
    }

    /// Keeps `place` taken while the stream `rep` lives (the drop of a
    /// stream is seen here, `poll.rs`).
    pub fn hold_while_stream_lives(&mut self, rep: u32, place: Arc<Place>) {
        self.held_by_streams.insert(rep, place);
    }

    /// What a new connection belongs to.
    fn owner(&self, place: Place, client: Option<tenant::Client>) -> connection::Owner {
        connection::Owner {
            place,
            client,
            instance: self.instance.subscribe(),
            timeouts: self.timeouts,
        }
    }

    /// The grants' decision on one use of an address; a refusal is logged
    /// at once, an allowed use by [`SocketsCtx::done`] once it happened.
    fn allowed(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let allowed = self.grants.check(addr, use_);
        if !allowed {
            crate::audit::log(&self.grants, addr, use_, false);
        }
        allowed
    }

    /// The audit line for an allowed use that succeeded.
    fn done(&self, addr: SocketAddr, use_: SocketAddrUse) {
        crate::audit::log(&self.grants, addr, use_, true);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasi_version::{versioned, WASI_VERSION};

    struct Nothing;

    impl HasTcp for Nothing {
        fn tcp(&mut self) -> SocketsView<'_> {
            unreachable!("never called: the linker is only built")
        }
    }

    /// The `bindgen!` above registers the host's TCP under WASI_VERSION.
    #[test]
    fn the_hosts_tcp_is_registered_under_the_wasi_version() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<Nothing>::new(&engine);
        add_to_linker(&mut linker, false).unwrap();
        linker.allow_shadowing(false);
        let mut tcp = linker.instance(&versioned("wasi:sockets/tcp")).unwrap();
        let again = tcp.func_wrap("[method]tcp-socket.start-bind", |_, (): ()| Ok(()));
        let error = again.expect_err(&format!("no tcp@{WASI_VERSION} from bindgen!"));
        assert!(format!("{error:#}").contains("defined twice"), "{error:#}");
    }
}
