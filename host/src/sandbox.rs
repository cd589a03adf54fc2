//! The sandbox a guest runs in: its WASI context and its imports.
//!
//! The guest gets stdout and stderr (they show up in the host's output),
//! an empty stdin, the arguments after `--`, one environment variable
//! (`LISTEN_ADDR`), clocks and randomness, and the network the grants
//! allow. No directories, none of the host's environment variables.

use crate::policy::Grants;
use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::filesystem::types::Descriptor;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Everything the host keeps per guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl GuestState {
    /// The guest's view of the world: `argv`, its environment, and the network in `grants`.
    pub fn new(grants: &Arc<Grants>, argv: &[String], env: &[(String, String)]) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().args(argv).envs(env);
        // wasmtime-wasi refuses TCP and UDP outright unless allowed here;
        // allowing both hands every decision to `Grants::check`, which
        // refuses per address and logs each refusal.
        wasi.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(grants.dns);
        let grants = Arc::clone(grants);
        wasi.socket_addr_check(move |addr, use_| {
            let allowed = grants.check(addr, use_);
            Box::pin(async move { allowed })
        });
        GuestState { wasi: wasi.build(), table: ResourceTable::new() }
    }
}

/// WASI 0.2 (everything in `wasi:cli/command`), with the imports the host
/// refuses replaced by versions that log the refusal.
pub fn linker(
    engine: &Engine,
    grants: &Grants,
    env: &[(String, String)],
) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    linker.allow_shadowing(true);

    if !grants.dns {
        linker.instance("wasi:sockets/ip-name-lookup@0.2.12")?.func_wrap(
            "resolve-addresses",
            |_, (_network, name): (Resource<Network>, String)| {
                tracing::warn!("denied: name lookup of {name:?} (grant it with --allow-dns)");
                Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::AccessDenied),))
            },
        )?;
    }

    // No directory is granted, so the guest sees an empty filesystem.
    linker.instance("wasi:filesystem/preopens@0.2.12")?.func_wrap("get-directories", |_, ()| {
        tracing::warn!("denied: the guest looked for directories; none are granted");
        Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
    })?;

    // The guest sees only the variables the host set for it.
    let env = env.to_vec();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    let shown = names.join(", ");
    linker.instance("wasi:cli/environment@0.2.12")?.func_wrap("get-environment", move |_, ()| {
        tracing::info!("guest read its environment: it sees {shown} only; the host's variables are not shared");
        Ok((env.clone(),))
    })?;
    Ok(linker)
}
