//! The sandbox a guest runs in: its WASI context, its limits, its imports.
//!
//! By default the guest gets stdout and stderr (they show up in the host's
//! output), an empty stdin, the arguments after `--`, one environment
//! variable (`LISTEN_ADDR`), clocks and randomness, and the listen
//! addresses. Everything else is a grant (see `policy.rs`, `settings.rs`).
//!
//! The guest's listeners get TCP_NODELAY unless `--nagle` (see `nodelay.rs`).
//!
//! A few imports are replaced so that the host can see and say what the
//! guest does: refused name lookups and directory look-ups are logged, and
//! socket creation and closing are counted against `--max-connections`.

use crate::limits::{MemoryLimit, SocketCount};
use crate::nodelay;
use crate::policy::Grants;
use crate::settings::{Settings, TraceDetail};
use crate::trace::{self, Tracer};
use anyhow::{Context, Result};
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::p2::bindings::filesystem::types::Descriptor;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{SocketError, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Everything the host keeps per guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub memory: MemoryLimit,
    /// Set with `--trace`.
    pub tracer: Option<Tracer>,
    socket_count: Arc<SocketCount>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl GuestState {
    /// A fresh instance's view of the world: `argv`, its environment, its
    /// directories and the network its grants allow.
    pub fn new(settings: &Settings, grants: &Arc<Grants>, argv: &[String]) -> Result<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().args(argv).envs(&settings.guest_env());
        for dir in &settings.dirs {
            let perms = if dir.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot open --dir {}", dir.host.display()))?;
        }
        // wasmtime-wasi refuses TCP (and UDP) outright unless allowed here.
        // Allowing TCP hands every decision to `Grants::check`, which decides
        // per address and logs each decision.
        wasi.allow_tcp(true).allow_udp(grants.udp).allow_ip_name_lookup(grants.dns);
        let sockets = Arc::new(SocketCount::new(settings.limits.max_connections));
        let (grants, count) = (Arc::clone(grants), Arc::clone(&sockets));
        let (nagle, trace) = (settings.nagle, settings.trace.is_some());
        wasi.socket_addr_check(move |addr, use_| {
            let allowed = grants.check(addr, use_);
            // A client the grants let in still needs a free socket slot; the
            // cap logs its own refusal, so the client is not logged as accepted.
            let turned_away = allowed
                && matches!(use_, SocketAddrUse::TcpAccept)
                && !count.try_open(&format_args!("a client from {addr}, turned away"));
            if !turned_away {
                grants.log(addr, use_, allowed);
            }
            if allowed && !nagle && matches!(use_, SocketAddrUse::TcpListen) {
                nodelay::set_on_listener(addr, trace);
            }
            Box::pin(async move { allowed && !turned_away })
        });
        Ok(GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryLimit::new(settings.limits.max_memory),
            tracer: settings.trace.map(|data| Tracer::new(data == TraceDetail::Data)),
            socket_count: sockets,
        })
    }
}

/// WASI 0.2 (everything in `wasi:cli/command`), with the replacements
/// described at the top of this file.
pub fn linker(engine: &Engine, settings: &Settings) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    linker.allow_shadowing(true);
    let grants = &settings.grants;

    if !grants.dns {
        linker.instance("wasi:sockets/ip-name-lookup@0.2.12")?.func_wrap(
            "resolve-addresses",
            |_, (_network, name): (Resource<Network>, String)| {
                tracing::warn!(
                    event = "denied",
                    name,
                    "denied: name lookup of {name:?} (grant it with --allow-dns)"
                );
                Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::AccessDenied),))
            },
        )?;
    }

    if settings.dirs.is_empty() {
        linker.instance("wasi:filesystem/preopens@0.2.12")?.func_wrap("get-directories", |_, ()| {
            tracing::warn!(event = "denied", "denied: the guest looked for directories; none are granted (grant one with --dir)");
            Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
        })?;
    }

    // The guest sees only the variables the host set for it.
    let env = settings.guest_env();
    let shown = env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
    linker.instance("wasi:cli/environment@0.2.12")?.func_wrap("get-environment", move |_, ()| {
        tracing::info!(event = "environment", "guest read its environment: it sees {shown} only; the host's variables are not shared");
        Ok((env.clone(),))
    })?;

    count_tcp_sockets(&mut linker)?;
    if settings.trace.is_some() {
        trace::add_to_linker(&mut linker)?;
    }
    if grants.udp {
        count_udp_sockets(&mut linker)?;
    } else {
        linker.instance("wasi:sockets/udp-create-socket@0.2.12")?.func_wrap(
            "create-udp-socket",
            |_, (_family,): (IpAddressFamily,)| {
                tracing::warn!(
                    event = "denied",
                    "denied: a UDP socket (UDP is not granted; grant it with --allow-udp)"
                );
                Ok((Err::<Resource<UdpSocket>, _>(ErrorCode::AccessDenied),))
            },
        )?;
    }
    Ok(linker)
}

/// socket(SOCK_STREAM) takes a place under `--max-connections`; dropping
/// the socket gives it back. (Accepted clients take theirs in the address
/// check, before the guest sees them.)
fn count_tcp_sockets(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance("wasi:sockets/tcp-create-socket@0.2.12")?.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<GuestState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            if !state.socket_count.try_open(&"a new TCP socket") {
                return Ok((Err(ErrorCode::NewSocketLimit),));
            }
            let created = tcp_create_socket::Host::create_tcp_socket(&mut state.sockets(), family);
            let created = settle(created, &state.socket_count)?;
            trace::socket(state, family, &created);
            Ok((created,))
        },
    )?;
    linker.instance("wasi:sockets/tcp@0.2.12")?.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store, rep| {
            let state = store.data_mut();
            state.table.delete(Resource::<TcpSocket>::new_own(rep))?;
            state.socket_count.close();
            trace::closesocket(state, rep);
            Ok(())
        },
    )?;
    Ok(())
}

/// The same for UDP sockets, when UDP is granted.
fn count_udp_sockets(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance("wasi:sockets/udp-create-socket@0.2.12")?.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<GuestState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.socket_count.try_open(&"a new UDP socket") {
                    return Ok((Err(ErrorCode::NewSocketLimit),));
                }
                let created =
                    udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family).await;
                Ok((settle(created, &state.socket_count)?,))
            })
        },
    )?;
    linker.instance("wasi:sockets/udp@0.2.12")?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store, rep| {
            let state = store.data_mut();
            state.table.delete(Resource::<UdpSocket>::new_own(rep))?;
            state.socket_count.close();
            Ok(())
        },
    )?;
    Ok(())
}

/// A creation's result as the guest sees it; a failed creation gives its
/// place back. A trap (not an error code) stays a trap.
fn settle<T>(
    created: Result<Resource<T>, SocketError>,
    sockets: &SocketCount,
) -> wasmtime::Result<Result<Resource<T>, ErrorCode>> {
    match created {
        Ok(resource) => Ok(Ok(resource)),
        Err(e) => {
            sockets.close();
            Ok(Err(e.downcast()?))
        }
    }
}
