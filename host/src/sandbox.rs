//! The sandbox a guest runs in: its WASI context, its limits, its imports.
//!
//! By default the guest gets stdout and stderr (they show up in the host's
//! output), an empty stdin, the arguments after `--`, one environment
//! variable (`LISTEN_ADDR`), clocks and randomness, and the listen
//! addresses. Everything else is a grant (see `policy.rs`, `settings.rs`).
//!
//! TCP is the host's own (`sockets/`). Of wasmtime-wasi's imports, a few
//! are replaced so that the host can say what the guest tried: refused
//! name lookups and directory look-ups are logged, and UDP sockets count
//! against `--max-connections` like TCP ones.

use crate::limits::MemoryLimit;
use crate::policy::Grants;
use crate::settings::{Settings, TraceDetail};
use crate::sockets::{self, HasTcp, Listeners, SocketCap, SocketsCtx, SocketsView, Tenant};
use crate::trace::Tracer;
use anyhow::{Context, Result};
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::p2::bindings::filesystem::types::Descriptor;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::udp_create_socket;
use wasmtime_wasi::p2::UdpSocket;
use wasmtime_wasi::sockets::WasiSocketsView;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Everything the host keeps per guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryLimit,
    sockets: SocketsCtx,
    cap: Arc<SocketCap>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HasTcp for GuestState {
    fn tcp(&mut self) -> SocketsView<'_> {
        SocketsView { ctx: &mut self.sockets, table: &mut self.table }
    }
}

impl GuestState {
    /// A fresh instance's view of the world: `argv`, its environment, its
    /// directories, the network its grants allow, and the listeners the
    /// host keeps for it.
    pub fn new(
        settings: &Settings,
        grants: &Arc<Grants>,
        listeners: &Arc<Listeners>,
        tenant: Arc<Tenant>,
        argv: &[String],
    ) -> Result<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().args(argv).envs(&settings.guest_env());
        for dir in &settings.dirs {
            let perms = if dir.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot open --dir {}", dir.host.display()))?;
        }
        // TCP never reaches wasmtime-wasi (the host implements it); UDP and
        // name lookups do, when granted, and `Grants::check` decides each
        // UDP address, logging each decision.
        wasi.allow_tcp(false).allow_udp(grants.udp).allow_ip_name_lookup(grants.dns);
        let udp_grants = Arc::clone(grants);
        wasi.socket_addr_check(move |addr, use_| {
            let allowed = udp_grants.check(addr, use_);
            udp_grants.log(addr, use_, allowed);
            Box::pin(async move { allowed })
        });
        let cap = SocketCap::new(settings.limits.max_connections);
        let tracer = settings.trace.map(|detail| Tracer::new(detail == TraceDetail::Data));
        let sockets = SocketsCtx::new(
            Arc::clone(grants),
            Arc::clone(listeners),
            tenant,
            Arc::clone(&cap),
            !settings.nagle,
            tracer,
        );
        Ok(GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryLimit::new(settings.limits.max_memory),
            sockets,
            cap,
        })
    }
}

/// WASI 0.2 (everything in `wasi:cli/command`), with the host's own TCP
/// and the replacements described at the top of this file.
pub fn linker(engine: &Engine, settings: &Settings) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    sockets::add_to_linker(&mut linker, settings.trace.is_some())?;
    linker.allow_shadowing(true);
    let grants = &settings.grants;

    if !grants.dns {
        deny_name_lookups(&mut linker)?;
    }
    if settings.dirs.is_empty() {
        linker.instance("wasi:filesystem/preopens@0.2.12")?.func_wrap("get-directories", |_, ()| {
            tracing::warn!(event = "denied", "denied: the guest looked for directories; none are granted (grant one with --dir)");
            Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
        })?;
    }

    // The guest sees only the variables the host set for it.
    let env = settings.guest_env();
    let shown = match env.is_empty() {
        true => "no variables".to_string(),
        false => env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ") + " only",
    };
    linker.instance("wasi:cli/environment@0.2.12")?.func_wrap(
        "get-environment",
        move |_, ()| {
            tracing::info!(
                event = "environment",
                "guest read its environment: it sees {shown}; the host's variables are not shared"
            );
            Ok((env.clone(),))
        },
    )?;

    match grants.udp {
        true => count_udp_sockets(&mut linker)?,
        false => deny_udp(&mut linker)?,
    }
    Ok(linker)
}

/// A lookup the policy refuses fails the way the WIT says a lookup can:
/// `permanent-resolver-failure`, what guests written against it expect.
/// The log line says it was the policy.
fn deny_name_lookups(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance("wasi:sockets/ip-name-lookup@0.2.12")?.func_wrap(
        "resolve-addresses",
        |_, (_network, name): (Resource<Network>, String)| {
            tracing::warn!(
                event = "denied",
                name,
                "denied: name lookup of {name:?} (grant it with --allow-dns)"
            );
            Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::PermanentResolverFailure),))
        },
    )?;
    Ok(())
}

fn deny_udp(linker: &mut Linker<GuestState>) -> Result<()> {
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
    Ok(())
}

/// UDP sockets (wasmtime-wasi's) take a place under `--max-connections`
/// when created and give it back when dropped.
fn count_udp_sockets(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance("wasi:sockets/udp-create-socket@0.2.12")?.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<GuestState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                if !state.cap.try_open(&"a new UDP socket") {
                    return Ok((Err(ErrorCode::NewSocketLimit),));
                }
                let created =
                    udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family).await;
                match created {
                    Ok(socket) => Ok((Ok(socket),)),
                    Err(e) => {
                        state.cap.close();
                        Ok((Err(e.downcast()?),))
                    }
                }
            })
        },
    )?;
    linker.instance("wasi:sockets/udp@0.2.12")?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store, rep| {
            let state = store.data_mut();
            state.table.delete(Resource::<UdpSocket>::new_own(rep))?;
            state.cap.close();
            Ok(())
        },
    )?;
    Ok(())
}
