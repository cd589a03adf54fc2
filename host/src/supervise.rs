//! What both supervisors stand on (`run.rs`, one instance at a time, and
//! `per_client/`, an instance per client): the guest linked for its
//! settings, loading it and the policy again for a swap (off the serving
//! thread), the one line a swap that failed writes, what a swap asked for
//! while one is under way becomes, the start-up accounting, a stop, and an
//! error's first line. Neither supervisor uses the other.

use crate::guest::Compiled;
use crate::instance::{command_pre, Shared};
use crate::metrics::{self, SwapOutcome};
use crate::sandbox::{self, GuestState, Sandbox};
use crate::settings::Settings;
use crate::signals::SwapAsked;
use crate::sockets::{Caps, Listeners};
use anyhow::Result;
use std::process::ExitCode;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;

/// Checks that the process may open the descriptors the policy needs, sets
/// the process-wide total of the guests' memory, and says both (the
/// ledger, `ledger.rs`). Before anything is served.
pub fn account(settings: &Settings) -> Result<()> {
    let terms = settings.terms();
    crate::settings::check_descriptors(&terms)?;
    crate::limits::set_total_memory(terms.guest_memory());
    let metrics = &crate::metrics::METRICS;
    metrics.guest_memory_total_limit.set(terms.guest_memory());
    metrics.connections_max.set(i64::try_from(settings.limits.max_connections).unwrap_or(i64::MAX));
    Ok(())
}

/// SIGUSR1: one line of what the host holds now, against the ledger.
pub fn status(instances: usize, caps: &Caps) {
    use crate::metrics::METRICS;
    tracing::info!(
        event = "status",
        "status: {instances} guest instances alive, {} clients connected, {} of {} sockets, \
         {} of {} files, {} bytes of guest memory",
        METRICS.connections_open.get(),
        caps.sockets.open(),
        caps.sockets.max(),
        caps.files.open(),
        caps.files.max(),
        crate::limits::total_memory(),
    );
}

/// SIGTERM or SIGQUIT while stopping gracefully: nothing more to do but
/// say so; from now on SIGTERM stops at once.
pub fn already_stopping(signal: &str, signals: &mut crate::signals::Signals) {
    signals.stopping_gracefully();
    tracing::info!(
        event = "stop",
        "{signal} received; already stopping gracefully (SIGINT or SIGTERM stops at once)"
    );
}

/// The start-up line that says the ledger's totals.
pub fn announce(settings: &Settings) {
    tracing::info!(event = "ledger", "ledger: {}", settings.terms().summary());
}

/// What runs: the settings and sandbox, and the guest linked for them.
pub struct Linked {
    pub shared: Arc<Shared>,
    pub pre: CommandPre<GuestState>,
    /// The guest's code, and the SHA-256 of its component.
    pub guest: Compiled,
    pub digest: String,
}

impl Linked {
    /// `component`, linked for `settings`, with the host's engine, its
    /// listeners and its caps.
    pub fn new(
        engine: &Engine,
        (listeners, caps): (&Arc<Listeners>, &Caps),
        settings: Settings,
        guest: &Compiled,
    ) -> Result<Linked> {
        let linker = sandbox::linker(engine, &settings)?;
        let pre = command_pre(&linker, &guest.component)?;
        let name = crate::guest::name(settings.guest.as_deref());
        let argv = std::iter::once(name).chain(settings.guest_args.iter().cloned()).collect();
        let sandbox = Sandbox {
            grants: Arc::new(settings.grants.clone()),
            settings: Arc::new(settings),
            listeners: Arc::clone(listeners),
            caps: caps.clone(),
            argv,
        };
        let shared = Arc::new(Shared { engine: engine.clone(), sandbox });
        Ok(Linked { shared, pre, guest: guest.clone(), digest: guest.digest.clone() })
    }

    /// Says in the metrics that this guest now serves new clients.
    pub fn serves(&self) {
        let name = crate::guest::name(self.shared.sandbox.settings.guest.as_deref());
        crate::metrics::serving(&name, &self.digest);
    }

    /// Another guest, with new settings, in the same host.
    pub fn next(&self, settings: Settings, guest: &Compiled) -> Result<Linked> {
        let Shared { engine, sandbox } = &*self.shared;
        Linked::new(engine, (&sandbox.listeners, &sandbox.caps), settings, guest)
    }
}

/// The guest `new` settings name: from the bytes `--watch` read, when it
/// is still the file watched (the policy may have named another).
pub async fn load_guest(
    engine: &Engine,
    old: &Settings,
    new: &Settings,
    read: Option<Arc<Vec<u8>>>,
) -> Result<Compiled> {
    let read = read.filter(|_| old.guest == new.guest);
    crate::guest::load_in_background(engine, new.guest.as_deref(), read, new.cache_dir.as_deref())
        .await
}

/// The settings as the policy file says now: read, and its host names
/// resolved, on a thread for blocking work, never the one that serves
/// (a policy file on a slow disk, or a name server that does not answer,
/// must not stall the clients).
pub async fn reload_policy(settings: &Arc<Settings>) -> Result<Settings> {
    let settings = Arc::clone(settings);
    crate::off_thread::run("policy-reader", move || settings.reloaded())
        .await
        .map_err(|e| anyhow::anyhow!("reading the policy file again: {e}"))?
}

/// A swap asked for while one is under way: SIGHUP is ignored; a changed
/// file (`--watch`) is kept, to be swapped in next (the newest one), so
/// that what runs in the end is what the file holds.
pub fn asked_during_a_swap(asked: SwapAsked, guest: &str) -> Option<SwapAsked> {
    let said = asked.said(guest);
    match asked {
        SwapAsked::Hangup => {
            tracing::warn!(event = "swap", "{said} while a swap is under way; ignored");
            None
        }
        SwapAsked::FileChanged(_) => {
            tracing::info!(event = "swap", "{said} while a swap is under way: swapping it in next");
            Some(asked)
        }
    }
}

/// One line for a swap that did not happen; the running guest keeps going.
pub fn swap_failed(why: &str) {
    metrics::swapped(SwapOutcome::Failed);
    tracing::warn!(event = "swap", "swap failed: {why}; the running guest keeps serving");
}

/// The guest file to watch, with `--watch`.
pub(crate) fn watched(settings: &Settings) -> Option<&std::path::Path> {
    settings.guest.as_deref().filter(|_| settings.watch)
}

pub(crate) fn stopped(signal: &str) -> ExitCode {
    // Returning drops every instance (cancelling it wherever it is) and its
    // store, which closes its sockets.
    tracing::info!(event = "stop", "{signal} received: stopping the guest");
    ExitCode::SUCCESS
}

/// An error's first line, and the rest (a trap's wasm backtrace).
pub fn split_first_line(e: &anyhow::Error) -> (String, String) {
    let text = format!("{e:#}");
    match text.split_once('\n') {
        Some((first, rest)) => (first.to_string(), rest.to_string()),
        None => (text, String::new()),
    }
}
