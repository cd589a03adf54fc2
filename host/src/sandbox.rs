//! The sandbox a guest runs in: its WASI context, its limits, its imports.
//!
//! By default the guest gets stdout (the host's) and stderr (each line a
//! line of the host's log, `guest_output.rs`), an empty stdin, the arguments after `--`, one environment
//! variable (`LISTEN_ADDR`), clocks and randomness, and the listen
//! addresses. Everything else is a grant (see `policy.rs`, `settings.rs`).
//!
//! TCP is the host's own (`sockets/`). Of wasmtime-wasi's imports, a few
//! are replaced so that the host can say what the guest tried: refused
//! name lookups and directory look-ups are logged, UDP sockets count
//! against `--max-connections` like TCP ones, and files and directories
//! opened under a `--dir` grant (and the grants' directories themselves,
//! for each instance) against `--max-files`.
//!
//! Everything a guest holds in the host's memory is bounded: its linear
//! memories and tables (`limits.rs`), its sockets (the socket cap), and
//! its handles (sockets, streams, pollables, ...) by the resource table's
//! capacity, [`table_capacity`].

use crate::guest_output::GuestOutput;
use crate::ledger;
use crate::limits::GuestLimits;
use crate::log_limit::{Kind, LogLines};
use crate::policy::Grants;
use crate::settings::{Settings, TraceDetail};
use crate::sockets::{
    self, Asker, Caps, ClientStdio, HasTcp, Listeners, Place, SocketsCtx, SocketsView, Tenant,
    TrialStdio,
};
use crate::trace::Tracer;
use crate::wasi_version::versioned;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode as FsErrorCode, Host as FsHost, HostDescriptor,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::udp_create_socket;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::UdpSocket;
use wasmtime_wasi::sockets::WasiSocketsView;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

pub use crate::ledger::table_capacity;

/// What every guest instance's sandbox is made from.
pub struct Sandbox {
    pub settings: Arc<Settings>,
    pub grants: Arc<Grants>,
    /// The listeners the host keeps, lent to each instance in turn.
    pub listeners: Arc<Listeners>,
    /// One socket cap and one file cap for every instance.
    pub caps: Caps,
    pub argv: Vec<String>,
}

/// Where an instance's stdin and stdout lead.
pub enum Stdio {
    /// An empty stdin; stdout the host's (`guest_output.rs`).
    Host,
    /// One client's connection (`--per-client`): stdin reads from it,
    /// stdout writes to it; REMOTE_ADDR and REMOTE_PORT name it.
    Client { connection: ClientStdio, peer: SocketAddr },
    /// No client (`--per-client`'s trial instance): stdin never has a
    /// byte, stdout drops what it gets; REMOTE_ADDR 0.0.0.0, REMOTE_PORT 0.
    Trial(TrialStdio),
}

/// Everything the host keeps per guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    /// What `get-environment` answers.
    env: Vec<(String, String)>,
    table: ResourceTable,
    pub limits: GuestLimits,
    sockets: SocketsCtx,
    caps: Caps,
    /// Each UDP socket's place under the cap, by handle.
    udp_places: HashMap<u32, Place>,
    /// Each opened file's or directory's place under the file cap, by its
    /// descriptor's handle (its streams keep it too: `sockets/poll.rs`).
    file_places: HashMap<u32, Arc<Place>>,
    /// The `--dir` directories' places, for the instance's life.
    _dir_places: Vec<Place>,
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
        let Sandbox { settings, grants, listeners, caps, argv } = sandbox;
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
            Stdio::Trial(stdio) => {
                wasi.stdin(stdio.clone()).stdout(stdio);
                wasi.stderr(GuestOutput::stderr(tenant.id));
                env.push(("REMOTE_ADDR".to_string(), "0.0.0.0".to_string()));
                env.push(("REMOTE_PORT".to_string(), "0".to_string()));
            }
        }
        wasi.args(argv).envs(&env).max_random_size(ledger::MAX_RANDOM);
        let mut dir_places = Vec::new();
        for dir in &settings.dirs {
            let place = caps.files.take(Asker::Directory).with_context(|| {
                format!(
                    "cannot open --dir {} for a new instance: the guests hold all the files \
                     --max-files {} allows",
                    dir.host.display(),
                    settings.limits.max_files
                )
            })?;
            dir_places.push(place);
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
            crate::audit::log(&udp_grants, addr, use_, allowed);
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
            Arc::clone(&caps.sockets),
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
            caps: caps.clone(),
            udp_places: HashMap::new(),
            file_places: HashMap::new(),
            _dir_places: dir_places,
        })
    }

    /// A stream made from a file keeps the file's place while it lives:
    /// the file stays open for it after its descriptor is dropped.
    fn stream_holds<T: 'static>(
        &mut self,
        made: FsResult<Resource<T>>,
        place: Option<Arc<Place>>,
    ) -> wasmtime::Result<Result<Resource<T>, FsErrorCode>> {
        match made {
            Ok(stream) => {
                if let Some(place) = place {
                    self.sockets.hold_while_stream_lives(stream.rep(), place);
                }
                Ok(Ok(stream))
            }
            Err(e) => Ok(Err(FsHost::convert_error_code(&mut self.filesystem(), e)?)),
        }
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
    match settings.dirs.is_empty() {
        true => deny_directories(&mut linker)?,
        false => count_files(&mut linker)?,
    }

    // The guest sees only the variables the host set for it.
    linker.instance(&versioned("wasi:cli/environment"))?.func_wrap(
        "get-environment",
        move |store: StoreContextMut<GuestState>, ()| {
            static READ: Kind = Kind::info(LogLines::EnvironmentRead, "reads of the environment");
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
            static DENIED: Kind = Kind::warn(LogLines::NameLookupDenied, "denied name lookups");
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
            static DENIED: Kind = Kind::warn(LogLines::DirectoryDenied, "denied looks for directories");
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

/// Files and directories opened under a `--dir` grant take a place under
/// `--max-files` when opened, and give it back when the descriptor and
/// every stream made from it are dropped (or with the store). Past the
/// cap, `open-at` fails with `quota`, and the log says which option.
fn count_files(linker: &mut Linker<GuestState>) -> Result<()> {
    let mut types = linker.instance(&versioned("wasi:filesystem/types"))?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<GuestState>,
         (this, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let Some(place) = state.caps.files.take(Asker::File) else {
                    return Ok((Err(FsErrorCode::Quota),));
                };
                let mut fs = state.filesystem();
                match HostDescriptor::open_at(&mut fs, this, path_flags, path, open_flags, flags)
                    .await
                {
                    Ok(opened) => {
                        state.file_places.insert(opened.rep(), Arc::new(place));
                        Ok((Ok(opened),))
                    }
                    Err(e) => Ok((Err(FsHost::convert_error_code(&mut fs, e)?),)),
                }
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store: StoreContextMut<GuestState>, (this, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let place = state.file_places.get(&this.rep()).cloned();
            let made = HostDescriptor::read_via_stream(&mut state.filesystem(), this, offset);
            Ok((state.stream_holds(made, place)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<GuestState>, (this, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let place = state.file_places.get(&this.rep()).cloned();
            let made = HostDescriptor::write_via_stream(&mut state.filesystem(), this, offset);
            Ok((state.stream_holds(made, place)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<GuestState>, (this,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let place = state.file_places.get(&this.rep()).cloned();
            let made = HostDescriptor::append_via_stream(&mut state.filesystem(), this);
            Ok((state.stream_holds(made, place)?,))
        },
    )?;
    types.resource(
        "descriptor",
        ResourceType::host::<Descriptor>(),
        |mut store: StoreContextMut<GuestState>, rep| {
            let state = store.data_mut();
            state.file_places.remove(&rep);
            HostDescriptor::drop(&mut state.filesystem(), Resource::new_own(rep))
        },
    )?;
    Ok(())
}

fn deny_udp(linker: &mut Linker<GuestState>) -> Result<()> {
    linker.instance(&versioned("wasi:sockets/udp-create-socket"))?.func_wrap(
        "create-udp-socket",
        |_, (_family,): (IpAddressFamily,)| {
            static DENIED: Kind = Kind::warn(LogLines::UdpSocketDenied, "denied UDP sockets");
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
                let Some(place) = state.caps.sockets.take(Asker::UdpSocket) else {
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
