//! Supervises the guest: starts an instance; starts it again after a
//! failure (`--restart on-failure`); on SIGHUP loads the guest file again
//! and swaps the new instance in while the old one drains (`swap.rs`); on
//! SIGINT or SIGTERM stops everything.

use crate::engine;
use crate::epoch::EpochTicker;
use crate::guest;
use crate::instance::{command_pre, Instance, Shared};
use crate::sandbox::{self, GuestState};
use crate::settings::{Restart, Settings};
use crate::signals::{Received, Signals};
use crate::sockets::{activation, Listeners};
use crate::swap::{Drained, Swap, SwapStep};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;

pub use activation::Handed;

/// Restart backoff: the first delay, doubled after each failure up to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Give up after this many failures within `FAILURE_WINDOW`.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The listening sockets a service manager handed to this process (socket
/// activation). Call before any thread starts.
pub fn handed_sockets() -> Result<Vec<Handed>> {
    activation::take()
}

pub async fn run(settings: Settings, handed: Vec<Handed>) -> Result<ExitCode> {
    // Listen for the signals from the start, so that SIGINT and SIGTERM
    // always mean "stop gracefully" and never the default "die at once".
    let mut signals = Signals::install()?;
    // Bound now, so that a port already in use is reported before the
    // guest loads; kept until the host exits, across guest instances.
    let handed = handed.into_iter().map(|h| h.socket).collect();
    let listeners = Listeners::open(&settings.grants.listen, handed)?;
    let engine = Engine::new(&engine::config())?;
    let name = guest::name(settings.guest.as_deref());
    let settings = Arc::new(settings);
    let loading = load(&engine, &settings);
    let component = tokio::select! {
        loaded = loading => loaded?,
        signal = signals.stop() => return Ok(stopped(signal)),
    };
    let linker = sandbox::linker(&engine, &settings)?;
    let pre = command_pre(&linker, &component)?;
    let argv = std::iter::once(name.clone()).chain(settings.guest_args.iter().cloned()).collect();
    let grants = Arc::new(settings.grants.clone());
    let _ticker = EpochTicker::start(&engine)?;
    tracing::info!("running {name}; granted: {}; everything else is denied", grants.summary());
    let shared = Arc::new(Shared { engine, settings, grants, listeners, argv });
    Supervisor { shared, linker, next_id: 1 }.serve(pre, signals).await
}

/// Loads (compiles, or takes from the cache) the guest. Compiling a large
/// guest takes seconds: it runs off this thread, so that the host keeps
/// serving, and a stop request is honoured at once, meanwhile.
pub async fn load(engine: &Engine, settings: &Settings) -> Result<Component> {
    let (engine, path) = (engine.clone(), settings.guest.clone());
    let cache = settings.cache_dir.clone();
    let loading = tokio::task::spawn_blocking(move || {
        guest::load(&engine, path.as_deref(), cache.as_deref())
    });
    loading.await.context("loading the guest")?
}

fn stopped(signal: &str) -> ExitCode {
    // Returning drops every instance (cancelling it wherever it is) and its
    // store, which closes its sockets.
    tracing::info!("{signal} received: stopping the guest");
    ExitCode::SUCCESS
}

struct Supervisor {
    shared: Arc<Shared>,
    linker: Linker<GuestState>,
    /// The id the next instance gets: newer instances have larger ids.
    next_id: u64,
}

impl Supervisor {
    fn start(&mut self, pre: &CommandPre<GuestState>) -> Instance {
        self.next_id += 1;
        Instance::start(&self.shared, pre, self.next_id - 1)
    }

    async fn serve(
        mut self,
        mut pre: CommandPre<GuestState>,
        mut signals: Signals,
    ) -> Result<ExitCode> {
        let mut current = self.start(&pre);
        let mut failures = Failures::default();
        let mut swap: Option<Swap> = None;
        let mut draining: JoinSet<Drained> = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                received = signals.next() => match received {
                    Received::Stop(signal) => return Ok(stopped(signal)),
                    Received::Hangup if swap.is_some() => tracing::warn!(
                        event = "swap",
                        "SIGHUP received while a swap is under way; ignored"
                    ),
                    Received::Hangup => swap = Some(Swap::load(&self.shared)),
                    Received::Quit => return self.stop_gracefully(current, &mut signals).await,
                },
                outcome = current.ended() => {
                    let failure = match outcome {
                        Ok(()) => {
                            tracing::info!("the guest finished");
                            return Ok(ExitCode::SUCCESS);
                        }
                        Err(failure) => failure,
                    };
                    let delay = self.restart_delay(failure, &mut failures)?;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        signal = signals.stop() => return Ok(stopped(signal)),
                    }
                    current = self.start(&pre);
                }
                step = crate::swap::step(&mut swap) => match step {
                    SwapStep::Loaded(component) => {
                        swap = self.start_swap(component, &current);
                    }
                    SwapStep::TookOver(new, new_pre) => {
                        let old = std::mem::replace(&mut current, new);
                        pre = new_pre;
                        draining.spawn(crate::swap::drain(old, self.shared.settings.drain_timeout, "swap"));
                        swap = None;
                    }
                    SwapStep::Failed => swap = None,
                },
                Some(drained) = draining.join_next() => {
                    if let Ok(drained) = drained {
                        drained.log();
                    }
                }
            }
        }
    }

    /// SIGQUIT: no new clients for anyone; the current instance serves the
    /// ones it has until they leave or --drain-timeout passes (a stop
    /// signal meanwhile stops it at once); then the host exits.
    async fn stop_gracefully(&self, current: Instance, signals: &mut Signals) -> Result<ExitCode> {
        tracing::info!(event = "stop", "SIGQUIT received: taking no new clients");
        self.shared.listeners.stop_offering();
        let draining = crate::swap::drain(current, self.shared.settings.drain_timeout, "stop");
        tokio::select! {
            drained = draining => drained.log(),
            received = signals.next() => {
                if let Received::Stop(signal) = received {
                    return Ok(stopped(signal));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// After the current instance failed: the delay before starting it
    /// again, or the error to stop the host with.
    fn restart_delay(&self, failure: anyhow::Error, failures: &mut Failures) -> Result<Duration> {
        if self.shared.settings.restart != Restart::OnFailure {
            return Err(failure);
        }
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
        Ok(delay)
    }

    /// The new guest loaded: link it and start an instance of it beside
    /// the current one, which keeps serving meanwhile.
    fn start_swap(&mut self, component: Component, current: &Instance) -> Option<Swap> {
        let pre = match command_pre(&self.linker, &component) {
            Ok(pre) => pre,
            Err(e) => {
                crate::swap::failed(&format!("{e:#}"));
                return None;
            }
        };
        let required = self.shared.listeners.held_by(current.tenant.id);
        let instance = self.start(&pre);
        Some(Swap::starting(instance, pre, required, &self.shared.listeners))
    }
}

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
