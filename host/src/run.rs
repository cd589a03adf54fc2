//! Runs the guest until it returns, fails, or the host is told to stop;
//! with `--restart on-failure`, starts it again after a failure.

use crate::engine;
use crate::epoch::{EpochTicker, EPOCH_TICK};
use crate::guest;
use crate::policy::Grants;
use crate::sandbox::{self, GuestState};
use crate::settings::{Restart, Settings};
use crate::sockets::Listeners;
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;

/// Restart backoff: the first delay, doubled after each failure up to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Give up after this many failures within `FAILURE_WINDOW`.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

pub async fn run(settings: Settings) -> Result<ExitCode> {
    // Listen for SIGINT/SIGTERM from the start, so that they always mean
    // "stop gracefully" and never the default "die at once".
    let mut shutdown = Shutdown::install()?;
    // Bound now, so that a port already in use is reported before the
    // guest loads; kept until the host exits, across guest restarts.
    let listeners = Listeners::open(&settings.grants.listen)?;

    let engine = Engine::new(&engine::config())?;
    let name = guest::name(settings.guest.as_deref());
    // Compiling a large guest takes seconds: do it off this thread, so
    // that a stop request is honoured at once even then.
    let loading = {
        let (engine, path) = (engine.clone(), settings.guest.clone());
        let cache = settings.cache_dir.clone();
        tokio::task::spawn_blocking(move || guest::load(&engine, path.as_deref(), cache.as_deref()))
    };
    let component = tokio::select! {
        loaded = loading => loaded.context("loading the guest")??,
        signal = shutdown.recv() => return Ok(stopped(signal)),
    };
    let linker = sandbox::linker(&engine, &settings)?;
    let pre = command_pre(&linker, &component)?;
    let grants = Arc::new(settings.grants.clone());
    let argv: Vec<String> =
        std::iter::once(name.clone()).chain(settings.guest_args.iter().cloned()).collect();
    let _ticker = EpochTicker::start(&engine)?;

    tracing::info!("running {name}; granted: {}; everything else is denied", grants.summary());
    let mut failures = Failures::default();
    loop {
        let outcome = tokio::select! {
            outcome = run_once(&engine, &pre, &settings, &grants, &listeners, &argv) => outcome,
            signal = shutdown.recv() => return Ok(stopped(signal)),
        };
        let failure = match outcome {
            Ok(()) => {
                tracing::info!("the guest finished");
                return Ok(ExitCode::SUCCESS);
            }
            Err(failure) if settings.restart == Restart::OnFailure => failure,
            Err(failure) => return Err(failure),
        };
        let Some(delay) = failures.record() else {
            return Err(failure.context(format!(
                "the guest failed {MAX_FAILURES} times within {}s; not restarting it again",
                FAILURE_WINDOW.as_secs()
            )));
        };
        let reason = format!("{failure:#}");
        let summary = reason.lines().next().unwrap_or_default();
        tracing::warn!(
            event = "restart",
            "the guest failed: {summary}; restarting it in {delay:?}"
        );
        tracing::debug!("{reason}");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            signal = shutdown.recv() => return Ok(stopped(signal)),
        }
    }
}

fn stopped(signal: &str) -> ExitCode {
    // Returning drops the guest's future (cancelling it wherever it is:
    // waiting in accept, or spinning) and its store, which closes its sockets.
    tracing::info!("{signal} received: stopping the guest");
    ExitCode::SUCCESS
}

/// One instance of the guest, from instantiation to the end of `run`.
async fn run_once(
    engine: &Engine,
    pre: &CommandPre<GuestState>,
    settings: &Settings,
    grants: &Arc<Grants>,
    listeners: &Arc<Listeners>,
    argv: &[String],
) -> Result<()> {
    let mut store = Store::new(engine, GuestState::new(settings, grants, listeners, argv)?);
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(1);
    match settings.limits.cpu_budget {
        // At every epoch tick, yield to the async runtime (where the stop
        // signal is waiting), then carry on for one more tick.
        None => store.epoch_deadline_async_yield_and_update(1),
        Some(budget) => {
            let allowed = budget.as_millis() / EPOCH_TICK.as_millis();
            let mut used = 0;
            store.epoch_deadline_callback(move |_| {
                used += 1;
                if used > allowed {
                    return Err(wasmtime::Error::new(CpuBudgetSpent(budget)));
                }
                Ok(UpdateDeadline::Yield(1))
            });
        }
    }
    let command =
        pre.instantiate_async(&mut store).await.map_err(|e| guest_failure(e, store.data()))?;
    // Unconstrained: tokio's cooperative budget (128 readiness checks per
    // turn) would make one `poll` over more connections than that report
    // the rest as not ready. The guest is this runtime's only work, so
    // there is nobody to be fair to.
    let result = tokio::task::unconstrained(command.wasi_cli_run().call_run(&mut store)).await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => bail!("the guest exited with an error (its `run` returned `err`)"),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            _ => Err(guest_failure(e, store.data())),
        },
    }
}

/// Links the guest's imports and finds its `wasi:cli/run` export.
fn command_pre(
    linker: &Linker<GuestState>,
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

/// Why the guest stopped, in words: its exit status, the limit it hit, or
/// its trap with the guest's (not the host's) backtrace.
fn guest_failure(e: wasmtime::Error, state: &GuestState) -> anyhow::Error {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return anyhow::anyhow!("the guest exited with status {}", exit.0);
    }
    if let Some(spent) = e.downcast_ref::<CpuBudgetSpent>() {
        return anyhow::anyhow!("the guest used up its CPU budget of {:?} (--cpu-budget)", spent.0);
    }
    let trap = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        // A host function that ends the guest (it broke a rule that the
        // spec makes a trap, say writing more than check-write allowed)
        // leaves a wasm backtrace too: report it as the trap it is.
        None if e.downcast_ref::<WasmBacktrace>().is_some() => e.root_cause().to_string(),
        None => {
            let failed = match state.memory.reached {
                true => format!(
                    "the guest needs more memory than --max-memory {} allows",
                    state.memory.max()
                ),
                false => "the guest failed".to_string(),
            };
            return anyhow::Error::from(e).context(failed);
        }
    };
    let (trapped_in, backtrace) = match e.downcast_ref::<WasmBacktrace>() {
        Some(bt) => {
            // The innermost frames, on the first line: enough to tell one
            // trap from another in a restart log.
            let names: Vec<&str> =
                bt.frames().iter().take(3).filter_map(|f| f.func_name()).collect();
            let text = bt
                .to_string()
                .replace("error while executing at wasm backtrace:", "wasm backtrace:");
            (format!(" (in {})", names.join(" <- ")), text)
        }
        None => (String::new(), String::new()),
    };
    let why = if state.memory.reached {
        format!(" after reaching its memory limit of {} (--max-memory)", state.memory.max())
    } else {
        String::new()
    };
    anyhow::anyhow!("the guest trapped{why}: {trap}{trapped_in}\n{backtrace}")
}

#[derive(Debug)]
struct CpuBudgetSpent(Duration);

impl std::fmt::Display for CpuBudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU budget of {:?} used up", self.0)
    }
}

impl std::error::Error for CpuBudgetSpent {}

/// Recent failures, for the restart backoff and the give-up rule.
#[derive(Default)]
struct Failures(VecDeque<Instant>);

impl Failures {
    /// Records a failure; returns how long to wait before restarting, or
    /// None when the guest has failed too often lately.
    fn record(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.0.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        self.0.push_back(now);
        let recent = self.0.len();
        (recent < MAX_FAILURES)
            .then(|| (FIRST_BACKOFF * 2u32.pow(recent as u32 - 1)).min(MAX_BACKOFF))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_then_give_up() {
        let mut failures = Failures::default();
        let delays: Vec<_> = std::iter::from_fn(|| failures.record()).collect();
        assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
    }
}
