//! The sandbox a guest runs in: its WASI context, its limits, its imports.
//!
//! By default the guest gets stdout (the host's) and stderr (each line a
//! line of the host's log, `guest_output.rs`), an empty stdin, the arguments after `--`, one environment
//! variable (`LISTEN_ADDR`), clocks and randomness, and the listen
//! addresses. Everything else is a grant (see `policy.rs`, `settings.rs`).
//!
//! TCP is the host's own (`sockets/`). Of wasmtime-wasi's imports, a few
//! are replaced so that the host can say what the guest tried: refused
//! name lookups and directory look-ups are logged, and UDP sockets count
//! against `--max-connections` like TCP ones.
//!
//! Everything a guest holds in the host's memory is bounded: its linear
//! memories and tables (`limits.rs`), its sockets (the socket cap), and
//! its handles (sockets, streams, pollables, ...) by the resource table's
//! capacity, [`table_capacity`].

use crate::guest_output::GuestOutput;
use crate::limits::GuestLimits;
use crate::log_limit::Kind;
use crate::policy::Grants;
use crate::settings::{Settings, TraceDetail};
use crate::sockets::{
    self, Asker, ClientStdio, HasTcp, Listeners, Place, SocketCap, SocketsCtx, SocketsView, Tenant,
};
use crate::trace::Tracer;
use crate::wasi_version::versioned;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
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

/// Handles a guest may hold for each socket the cap allows (a socket, its
/// two streams, their pollables, and room to spare)...
pub const HANDLES_PER_SOCKET: usize = 8;
/// ...and besides them (stdout, stderr, clocks, timers, files).
pub const HANDLES_BESIDES: usize = 1024;

/// The resource table's capacity for one guest instance: the handles it
/// may hold at once, scaled to the socket cap. Measured at about 140 bytes
/// of the host's memory each (a guest filling tables of 1 824 and 81 024
/// pollables), a full table at the default cap (9 216) is about 1.3 MiB.
pub fn table_capacity(max_connections: usize) -> usize {
    max_connections.saturating_mul(HANDLES_PER_SOCKET).saturating_add(HANDLES_BESIDES)
}

/// What every guest instance's sandbox is made from.
pub struct Sandbox {
    pub settings: Arc<Settings>,
    pub grants: Arc<Grants>,
    /// The listeners the host keeps, lent to each instance in turn.
    pub listeners: Arc<Listeners>,
    /// One socket cap for every instance.
    pub cap: Arc<SocketCap>,
    pub argv: Vec<String>,
}

/// Where an instance's stdin and stdout lead.
pub enum Stdio {
    /// An empty stdin; stdout the host's (`guest_output.rs`).
    Host,
    /// One client's connection (`--per-client`): stdin reads from it,
    /// stdout writes to it; REMOTE_ADDR and REMOTE_PORT name it.
    Client { connection: ClientStdio, peer: SocketAddr },
}

/// Everything the host keeps per guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    /// What `get-environment` answers.
    env: Vec<(String, String)>,
    table: ResourceTable,
    pub limits: GuestLimits,
    sockets: SocketsCtx,
    cap: Arc<SocketCap>,
    /// Each UDP socket's place under the cap, by handle.
    udp_places: HashMap<u32, Place>,
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
    pub fn new(sandbox: &Sandbox, tenant: Arc<Tenant>, stdio: Stdio) -> Result<Self> {
        let Sandbox { settings, grants, listeners, cap, argv } = sandbox;
        let mut wasi = WasiCtx::builder();
        let mut env = settings.guest_env();
        match stdio {
            Stdio::Host => {
                wasi.stdout(GuestOutput::stdout(tenant.id));
                wasi.stderr(GuestOutput::stderr(tenant.id));
            }
            Stdio::Client { connection, peer } => {
                // Its stderr's lines name the client: the instance runs in its span.
                wasi.stdin(connection.clone()).stdout(connection);
                wasi.stderr(GuestOutput::stderr(tenant.id));
                // The names systemd gives an `Accept=yes` service.
                env.push(("REMOTE_ADDR".to_string(), peer.ip().to_string()));
                env.push(("REMOTE_PORT".to_string(), peer.port().to_string()));
            }
        }
        wasi.args(argv).envs(&env);
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
        let options = sockets::Options {
            nodelay: !settings.nagle,
            tracer: settings.trace.map(|detail| Tracer::new(detail == TraceDetail::Data)),
            timeouts: sockets::Timeouts {
                send: settings.limits.send_timeout,
                idle: settings.limits.idle_timeout,
            },
        };
        let sockets = SocketsCtx::new(
            Arc::clone(grants),
            Arc::clone(listeners),
            tenant,
            Arc::clone(cap),
            options,
        );
        let mut table = ResourceTable::new();
        table.set_max_capacity(table_capacity(settings.limits.max_connections));
        Ok(GuestState {
            wasi: wasi.build(),
            env,
            table,
            limits: GuestLimits::new(settings.limits.max_memory),
            sockets,
            cap: Arc::clone(cap),
            udp_places: HashMap::new(),
        })
    }

    /// How many handles the guest holds, and the most it may.
    pub fn handles(&mut self) -> (usize, usize) {
        (self.table.iter_mut().count(), self.table.max_capacity())
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
        deny_directories(&mut linker)?;
    }

    // The guest sees only the variables the host set for it.
    linker.instance(&versioned("wasi:cli/environment"))?.func_wrap(
        "get-environment",
        move |store: StoreContextMut<GuestState>, ()| {
            static READ: Kind = Kind::info("reads of the environment");
            let env = &store.data().env;
            if READ.admit() {
                let shown = match env.is_empty() {
                    true => "no variables".to_string(),
                    false => {
                        env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ") + " only"
                    }
                };
                tracing::info!(
                    event = "environment",
                    "guest read its environment: it sees {shown}; the host's variables are not shared"
                );
            }
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
    linker.instance(&versioned("wasi:sockets/ip-name-lookup"))?.func_wrap(
        "resolve-addresses",
        |_, (_network, name): (Resource<Network>, String)| {
            static DENIED: Kind = Kind::warn("denied name lookups");
            if DENIED.admit() {
                tracing::warn!(
                    event = "denied",
                    name,
                    "denied: name lookup of {name:?} (grant it with --allow-dns)"
                );
            }
            Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::PermanentResolverFailure),))
        },
    )?;
    Ok(())
}

fn deny_directories(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance(&versioned("wasi:filesystem/preopens"))?.func_wrap(
        "get-directories",
        |_, ()| {
            static DENIED: Kind = Kind::warn("denied looks for directories");
            if DENIED.admit() {
                tracing::warn!(
                    event = "denied",
                    "denied: the guest looked for directories; none are granted (grant one with --dir)"
                );
            }
            Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
        },
    )?;
    Ok(())
}

fn deny_udp(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance(&versioned("wasi:sockets/udp-create-socket"))?.func_wrap(
        "create-udp-socket",
        |_, (_family,): (IpAddressFamily,)| {
            static DENIED: Kind = Kind::warn("denied UDP sockets");
            if DENIED.admit() {
                tracing::warn!(
                    event = "denied",
                    "denied: a UDP socket (UDP is not granted; grant it with --allow-udp)"
                );
            }
            Ok((Err::<Resource<UdpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    Ok(())
}

/// UDP sockets (wasmtime-wasi's) take a place under `--max-connections`
/// when created, and give it back when dropped (or with the store).
fn count_udp_sockets(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance(&versioned("wasi:sockets/udp-create-socket"))?.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<GuestState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                let Some(place) = state.cap.take(Asker::UdpSocket) else {
                    return Ok((Err(ErrorCode::NewSocketLimit),));
                };
                let created =
                    udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family).await;
                match created {
                    Ok(socket) => {
                        state.udp_places.insert(socket.rep(), place);
                        Ok((Ok(socket),))
                    }
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    linker.instance(&versioned("wasi:sockets/udp"))?.resource(
        "udp-socket",
        ResourceType::host::<UdpSocket>(),
        |mut store, rep| {
            let state = store.data_mut();
            state.table.delete(Resource::<UdpSocket>::new_own(rep))?;
            state.udp_places.remove(&rep);
            Ok(())
        },
    )?;
    Ok(())
}
