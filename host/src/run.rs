//! Runs one guest until it returns, traps, or the host is told to stop.

use crate::cli::Args;
use crate::policy::Grants;
use crate::sandbox::{self, GuestState};
use crate::{engine, guest};
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use wasmtime::component::Component;
use wasmtime::{Engine, Store, Trap, WasmBacktrace};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;

/// How often compiled guest code checks in with the host. A guest that
/// spins in a loop yields this often, so a stop request is seen quickly.
const EPOCH_TICK: Duration = Duration::from_millis(10);

pub async fn run(args: Args) -> Result<ExitCode> {
    // Listen for SIGINT/SIGTERM from the start, so that they always mean
    // "stop gracefully" and never the default "die at once".
    let mut shutdown = Shutdown::install()?;

    let grants = Arc::new(Grants {
        listen: vec![args.listen],
        connect: args.allow_connect.clone(),
        udp: args.allow_udp,
        dns: args.allow_dns,
    });
    for addr in &grants.listen {
        check_can_listen(*addr)?;
    }

    let engine = Engine::new(&engine::config())?;
    let name = guest::name(args.guest.as_deref());
    let component = guest::load(&engine, args.guest.as_deref())?;
    let env = vec![("LISTEN_ADDR".to_string(), args.listen.to_string())];
    let linker = sandbox::linker(&engine, &grants, &env)?;
    let pre = command_pre(&linker, &component)?;

    let argv: Vec<String> =
        std::iter::once(name.clone()).chain(args.guest_args.iter().cloned()).collect();
    let mut store = Store::new(&engine, GuestState::new(&grants, &argv, &env));
    // At every epoch tick, yield to the async runtime (where the stop
    // signal is waiting), then carry on for one more tick.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let _ticker = EpochTicker::start(&engine);

    tracing::info!("running {name}; granted: listen on {}; everything else is denied", args.listen);
    let command = pre
        .instantiate_async(&mut store)
        .await
        .map_err(anyhow::Error::from)
        .context("instantiating the guest")?;
    tokio::select! {
        // Unconstrained: tokio's cooperative budget (128 readiness checks
        // per turn) would make one `poll` over more connections than that
        // report the rest as not ready. The guest is this runtime's only
        // work, so there is nobody to be fair to.
        result = tokio::task::unconstrained(command.wasi_cli_run().call_run(&mut store)) => match result {
            Ok(Ok(())) => {
                tracing::info!("the guest finished");
                Ok(ExitCode::SUCCESS)
            }
            Ok(Err(())) => bail!("the guest exited with an error (its `run` returned `err`)"),
            Err(e) => guest_failure(e),
        },
        signal = shutdown.recv() => {
            // Dropping the `call_run` future cancels the guest wherever it
            // is: blocked in accept, or spinning. Dropping the store then
            // closes its sockets.
            tracing::info!("{signal} received: stopping the guest");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fails early, with the address in the message, when the listen address
/// cannot be bound (typically: another server already has it).
fn check_can_listen(addr: SocketAddr) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the address is already in use \
             (is another server running? choose another with --listen)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

/// Links the guest's imports and finds its `wasi:cli/run` export.
fn command_pre(
    linker: &wasmtime::component::Linker<GuestState>,
    component: &Component,
) -> Result<CommandPre<GuestState>> {
    let engine = linker.engine();
    let exports_run = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:cli/run@0.2."));
    if !exports_run {
        bail!(
            "the guest does not export `wasi:cli/run@0.2.x`, so there is nothing to run; \
             this host runs WASI 0.2 commands (a Rust `fn main` built for wasm32-wasip2, \
             or a component whose world exports wasi:cli/run)"
        );
    }
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!("the guest needs an import this host does not provide: {e:#}")
    })?;
    CommandPre::new(instance_pre)
        .map_err(anyhow::Error::from)
        .context("the guest's `wasi:cli/run` export has an unexpected type")
}

/// Turns the guest's `exit(n)` into our exit status, and a trap into a
/// message with the guest's (not the host's) backtrace.
fn guest_failure(e: wasmtime::Error) -> Result<ExitCode> {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        tracing::info!("the guest exited with status {}", exit.0);
        return Ok(ExitCode::from(u8::try_from(exit.0).unwrap_or(1)));
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        let backtrace = e
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| {
                bt.to_string()
                    .replace("error while executing at wasm backtrace:", "wasm backtrace:")
            })
            .unwrap_or_default();
        bail!("the guest trapped: {trap}\n{backtrace}");
    }
    Err(anyhow::Error::from(e).context("the guest failed"))
}

/// SIGINT (Ctrl-C) and SIGTERM, registered once, awaited together.
struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    fn install() -> Result<Self> {
        Ok(Shutdown {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`]. It has
/// to be a thread: while a guest spins, the async runtime cannot run.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, stopped) = (engine.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
