//! One instance of the guest: its store, its limits, its `run` call, and
//! the words for how it ended. Each runs as a task of its own, so that
//! during a swap an old instance serves its clients beside the new one.

use crate::cpu::{BudgetSpent, Metered};
use crate::escape::{self, MAX_NAME};
use crate::limits;
use crate::log_limit::{Kind, LogLines};
use crate::metrics::{self, Failure, METRICS};
use crate::sandbox::{self, GuestState, Sandbox, Stdio};
use crate::sockets::Tenant;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use tokio::task::JoinHandle;
use wasmtime::component::{Component, Linker, ResourceTableError};
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;

/// What every instance of the guest is made with.
pub struct Shared {
    pub engine: Engine,
    pub sandbox: Sandbox,
}

/// A running guest instance: a task of its own, stopped when dropped.
pub struct Instance {
    pub tenant: Arc<Tenant>,
    task: JoinHandle<Result<()>>,
}

impl Instance {
    /// Starts instance number `id` of `pre`.
    pub fn start(shared: &Arc<Shared>, pre: &CommandPre<GuestState>, id: u64) -> Instance {
        let tenant = Tenant::new(id);
        let run = run_once(Arc::clone(shared), pre.clone(), Arc::clone(&tenant), Stdio::Host);
        Instance { tenant, task: tokio::spawn(run) }
    }

    /// Waits for the instance to end: its `run` returned, or it failed.
    pub async fn ended(&mut self) -> Result<()> {
        match (&mut self.task).await {
            Ok(outcome) => outcome,
            Err(e) => Err(anyhow::anyhow!("the guest's task ended: {e}")),
        }
    }
}

impl Drop for Instance {
    /// Dropping the task's future cancels the guest wherever it is (waiting
    /// in `poll`, or spinning: epochs make it yield) and drops its store,
    /// which closes its sockets and gives kept listeners back.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One instance of the guest, from instantiation to the end of `run`.
pub async fn run_once(
    shared: Arc<Shared>,
    pre: CommandPre<GuestState>,
    tenant: Arc<Tenant>,
    stdio: Stdio,
) -> Result<()> {
    let Shared { engine, sandbox } = &*shared;
    let limits = sandbox.settings.limits;
    let state = GuestState::new(sandbox, tenant, stdio)?;
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    // The guest's handles, of the host's resources and of its own
    // (`resource.new`), and those it lends for a call: a bound above the
    // host's resource table, so that the table's (with its clear message)
    // is the one a guest meets first.
    store.set_max_component_handles(2 * sandbox::table_capacity(limits.max_connections));
    store.set_epoch_deadline(1);
    let budget = limits.cpu_budget;
    METRICS.guest_starts.inc();
    METRICS.guest_memory_limit.set(limits.max_memory.0);
    METRICS.guest_cpu_budget.set(budget.map_or(0.0, |b| b.as_secs_f64()));
    store.epoch_deadline_callback(move |_| {
        // At every epoch tick, yield to the async runtime (where the stop
        // signal is waiting, and the CPU budget is looked at), then carry
        // on for one more tick. tokio's own yield: the runtime looks for
        // network events and signals before it resumes the guest; after a
        // plain wake-up it would resume it at once, and look only every
        // 61st time.
        Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
    });
    let run = async {
        let command = pre.instantiate_async(&mut store).await?;
        // Unconstrained: tokio's cooperative budget (128 readiness checks
        // per turn) would make one `poll` over more connections than that
        // report the rest as not ready.
        tokio::task::unconstrained(command.wasi_cli_run().call_run(&mut store)).await
    };
    // Charged by the CPU time it causes when there is a budget to keep or
    // a metric to report it (two clock readings a run, spared otherwise).
    let result = match budget.is_some() || sandbox.settings.metrics.is_some() {
        true => Metered::new(run, budget).await,
        false => run.await,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => {
            metrics::guest_failed(Failure::Exit);
            Err(Exited(None).into())
        }
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            _ => Err(guest_failure(e, store.data_mut())),
        },
    }
}

/// Links the guest's imports and finds its `wasi:cli/run` export.
pub fn command_pre(
    linker: &Linker<GuestState>,
    component: &Component,
) -> Result<CommandPre<GuestState>> {
    let engine = linker.engine();
    let exports_run =
        component.component_type().exports(engine).any(|(name, _)| crate::inspect::is_run(name));
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
/// its trap with the guest's (not the host's) backtrace, on the lines after
/// the first. Counted in the metrics by kind.
fn guest_failure(e: wasmtime::Error, state: &mut GuestState) -> anyhow::Error {
    let (kind, failure) = describe_failure(e, state);
    metrics::guest_failed(kind);
    failure
}

fn describe_failure(e: wasmtime::Error, state: &mut GuestState) -> (Failure, anyhow::Error) {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return (Failure::Exit, Exited(Some(exit.0)).into());
    }
    if let Some(spent) = e.downcast_ref::<BudgetSpent>() {
        let why =
            anyhow::anyhow!("the guest used up its CPU budget of {:?} (--cpu-budget)", spent.0);
        return (Failure::CpuBudget, why);
    }
    if e.chain().any(|cause| cause.downcast_ref::<ResourceTableError>().is_some()) {
        return (Failure::Handles, table_full(state));
    }
    // wasmtime's words when a count in `limits.rs` is passed.
    if e.to_string().starts_with("resource limit exceeded") {
        let why = anyhow::anyhow!(
            "the guest was refused: {e} (a guest may create at most {} core instances, {} \
             memories and {} tables)",
            limits::MAX_INSTANCES,
            limits::MAX_MEMORIES,
            limits::MAX_TABLES
        );
        return (Failure::Refused, why);
    }
    let kind = match state.limits.reached {
        true => Failure::Memory,
        false => Failure::Trap,
    };
    (kind, describe_trap(e, state))
}

/// A trap (or another failure), with the guest's backtrace.
fn describe_trap(e: wasmtime::Error, state: &GuestState) -> anyhow::Error {
    let trap = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        // A host function that ends the guest (it broke a rule that the
        // spec makes a trap, say writing more than check-write allowed)
        // leaves a wasm backtrace too: report it as the trap it is.
        None if e.downcast_ref::<WasmBacktrace>().is_some() => {
            escape::escape_capped(&e.root_cause().to_string(), MAX_NAME)
        }
        None => {
            let failed = match state.limits.reached {
                true => format!(
                    "the guest needs more memory than --max-memory {} allows",
                    state.limits.max_memory()
                ),
                false => "the guest failed".to_string(),
            };
            return anyhow::Error::from(e).context(failed);
        }
    };
    let (trapped_in, backtrace) = match e.downcast_ref::<WasmBacktrace>() {
        Some(bt) => {
            // The innermost frames, on the first line: enough to tell one
            // trap from another in a restart log. Their names are the
            // guest's (any bytes): escaped, and cut short.
            let names: Vec<String> = bt
                .frames()
                .iter()
                .take(3)
                .filter_map(|f| f.func_name())
                .map(|name| escape::escape_capped(name, MAX_NAME))
                .collect();
            (format!(" (in {})", names.join(" <- ")), backtrace_text(bt))
        }
        None => (String::new(), String::new()),
    };
    let why = if state.limits.reached {
        format!(" after reaching its memory limit of {} (--max-memory)", state.limits.max_memory())
    } else {
        String::new()
    };
    anyhow::anyhow!("the guest trapped{why}: {trap}{trapped_in}\n{backtrace}")
}

/// The guest filled its resource table: it is stopped (a full table is a
/// trap wherever a handle is made), with one line that names the limit.
fn table_full(state: &mut GuestState) -> anyhow::Error {
    static FULL: Kind =
        Kind::warn(LogLines::HandleLimitReached, "guests stopped at their handle limit");
    let (held, max) = state.handles();
    let (per_socket, besides) = (crate::ledger::HANDLES_PER_SOCKET, crate::ledger::HANDLES_BESIDES);
    let why = format!(
        "the guest holds {held} handles (sockets, streams, pollables, ...), the most it may \
         ({max}: {per_socket} for each socket --max-connections allows, and {besides} more)"
    );
    if FULL.admit() {
        tracing::warn!(event = "limit", "refused: {why}");
    }
    anyhow::anyhow!("the guest was stopped: {why}")
}

/// The guest ended on purpose, with a failure status: an exit status other
/// than 0, or `run` returning `err`.
#[derive(Debug)]
pub struct Exited(Option<i32>);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(status) => write!(f, "the guest exited with status {status}"),
            None => write!(f, "the guest exited with an error (its `run` returned `err`)"),
        }
    }
}

impl std::error::Error for Exited {}

/// The frames a trap report shows, innermost first.
const MAX_FRAMES: usize = 32;

/// The guest's backtrace, a line per frame (at most [`MAX_FRAMES`]), as
/// wasmtime writes it, but with every name the guest chose (module,
/// function, source file) escaped and cut short: a name section cannot
/// add a line to the host's report.
fn backtrace_text(bt: &WasmBacktrace) -> String {
    let shown = |name: &str| escape::escape_capped(name, MAX_NAME);
    let mut lines = vec!["wasm backtrace:".to_string()];
    for (i, frame) in bt.frames().iter().enumerate().take(MAX_FRAMES) {
        let module = shown(frame.module().name().unwrap_or("<unknown>"));
        let offset = frame.module_offset().map_or(String::new(), |o| format!("{o:#8x} - "));
        let func = match frame.func_name() {
            Some(name) => shown(&rustc_demangle::demangle(name).to_string()),
            None => format!("<wasm function {}>", frame.func_index()),
        };
        lines.push(format!("  {i:>3}: {offset}{module}!{func}"));
        for symbol in frame.symbols() {
            let name = symbol.name().map(|n| shown(&rustc_demangle::demangle(n).to_string()));
            let at = match (symbol.file(), symbol.line()) {
                (Some(file), Some(line)) => format!(" at {}:{line}", shown(file)),
                (Some(file), None) => format!(" at {}", shown(file)),
                _ => String::new(),
            };
            lines.push(format!("                - {}{at}", name.as_deref().unwrap_or("?")));
        }
    }
    if bt.frames().len() > MAX_FRAMES {
        lines.push(format!("  ... and {} frames more", bt.frames().len() - MAX_FRAMES));
    }
    lines.join("\n")
}
