//! Supervises the guest: starts an instance; starts it again after a
//! failure (`--restart on-failure`); on SIGHUP (or, with `--watch`, when
//! its file is replaced) loads the guest file again
//! and swaps the new instance in while the old one drains (`swap.rs`); on
//! SIGTERM or SIGQUIT drains every instance and exits; on SIGINT (or a
//! second SIGTERM) stops everything at once.
//!
//! If the running instance ends while a swap's new instance is starting,
//! the swap decides: if the new instance takes over, it serves; if the
//! swap fails, what would have happened without it happens then (a
//! restart after the backoff, or the exit).

use crate::engine;
use crate::epoch::EpochTicker;
use crate::guest;
use crate::guest::Compiled;
use crate::instance::Instance;
use crate::ledger::MAX_DRAINING;
use crate::metrics::METRICS;
use crate::notify;
use crate::notify::Notifier;
use crate::observe;
use crate::settings::{Restart, Settings};
use crate::signals::{Received, Signals, SwapAsked};
use crate::sockets::{Caps, Listeners};
use crate::supervise::{self, split_first_line, stopped, swap_failed, watched, Linked};
use crate::swap::{self, Drained, Swap, SwapStep};
use crate::upgrade::{Given, Upgrading};
use anyhow::Result;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use wasmtime::Engine;

/// Restart backoff: the first delay, doubled after each recent failure
/// (100, 200, 400, 800 ms: the fifth gives up).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Give up after this many failures within `FAILURE_WINDOW`.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

pub async fn run(mut settings: Settings, given: Given) -> Result<ExitCode> {
    // Listen for the signals from the start, so that SIGINT and SIGTERM
    // always mean "stop in order" and never the default "die at once".
    let mut signals = Signals::install(watched(&settings))?;
    supervise::account(&settings)?;
    // Bound now, so that a port already in use is reported before the
    // guest loads; kept until the host exits, across guest instances.
    let listeners = Listeners::open(&settings.grants.listen, given.listeners)?;
    let metrics = observe::listener(settings.metrics, given.metrics)?;
    if let Some(bound) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
        settings.metrics_bound_at(bound);
    }
    if let Some(interval) = notify::watchdog_interval() {
        // On this thread, the one that serves: if it hangs, so does this.
        tokio::spawn(notify::feed_the_watchdog(interval));
    }
    // Health from the start: a large guest may take a while to compile.
    let ready = Arc::new(observe::ReadyLater::default());
    let metrics = metrics.map(|listener| observe::Served::start(listener, Arc::clone(&ready)));
    let engine = Engine::new(&engine::config())?;
    let (path, cache) = (settings.guest.as_deref(), settings.cache_dir.as_deref());
    let component = tokio::select! {
        loaded = guest::load_in_background(&engine, path, None, cache) => loaded?,
        signal = signals.stop() => return Ok(stopped(signal)),
    };
    let caps = Caps::new(settings.limits.max_connections, settings.limits.max_files);
    let _ticker = EpochTicker::start(&engine)?;
    let name = guest::name(settings.guest.as_deref());
    tracing::info!(
        "running {name}; granted: {}; everything else is denied",
        settings.grants.summary()
    );
    supervise::announce(&settings);
    let guest = Linked::new(&engine, (&listeners, &caps), settings, &component)?;
    guest.serves();
    let supervisor = Supervisor::new(guest, metrics);
    ready.set(supervisor.readiness());
    supervisor.serve(signals).await
}

struct Supervisor {
    /// What runs: settings, imports, guest (a swap may change all three).
    guest: Linked,
    /// The id the next instance gets: newer instances have larger ids.
    next_id: u64,
    current: Current,
    swap: Option<Swap>,
    /// Old instances serving the clients they have.
    draining: JoinSet<Drained>,
    failures: Failures,
    /// Whether the current instance runs and the host is not stopping:
    /// half of readiness (the other half is its listeners).
    serving: Arc<AtomicBool>,
    notifier: Notifier,
    /// The guest file changed while a swap was under way (`--watch`): the
    /// newest bytes, swapped in once that swap has ended.
    next_swap: Option<SwapAsked>,
    /// The metrics endpoint, which an upgrade hands to the new host.
    metrics: Option<observe::Served>,
    /// A new host executable, started and not serving yet (`upgrade.rs`).
    upgrade: Upgrading,
}

/// The instance offered new clients, or why there is none. (One value per
/// host: the size of its largest state costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Current {
    /// None yet: the first starts when the supervisor serves.
    NotStarted,
    Running(Instance),
    /// It failed; it starts again then.
    Restarting(Instant),
    /// It ended while a swap's new instance was starting: if the swap
    /// fails, this is what happens.
    AfterSwap(Decision),
    /// It ended, and what follows is being decided (a restart, or the exit).
    Ended,
    /// The host stops gracefully: no instance is offered clients again.
    Stopping,
}

/// What to do when the current instance has ended.
enum Decision {
    Exit(Result<ExitCode>),
    /// Start it again, after the backoff (if it has not failed too often).
    Restart(anyhow::Error),
}

/// What woke the supervisor.
enum Event {
    Signal(Received),
    Ended(Result<()>),
    RestartDue,
    Swap(SwapStep),
    Drained(Drained),
    /// A listener's turn changed: readiness may have.
    Turns,
    /// An upgrade's new host serves (its process id), or will not.
    Upgraded(Result<u32>),
}

impl Current {
    /// The running instance's end, or the time to restart it (if it may).
    async fn next(&mut self, may_restart: bool) -> Event {
        match self {
            Current::Running(instance) => Event::Ended(instance.ended().await),
            Current::Restarting(at) if may_restart => {
                tokio::time::sleep_until(*at).await;
                Event::RestartDue
            }
            _ => std::future::pending().await,
        }
    }
}

impl Supervisor {
    fn new(guest: Linked, metrics: Option<observe::Served>) -> Self {
        Supervisor {
            metrics,
            upgrade: Upgrading::default(),
            current: Current::NotStarted,
            guest,
            next_id: 1,
            swap: None,
            draining: JoinSet::new(),
            failures: Failures::default(),
            serving: Arc::new(AtomicBool::new(false)),
            notifier: Notifier::from_env(),
            next_swap: None,
        }
    }

    /// Whether a guest serves every granted address (for `/readyz`).
    fn readiness(&self) -> observe::Readiness {
        let listeners = Arc::clone(&self.guest.shared.sandbox.listeners);
        let serving = Arc::clone(&self.serving);
        Arc::new(move || ready(&listeners, &serving))
    }

    /// Starts instance number `next_id` of `guest`.
    fn start(&mut self, guest: &Linked) -> Instance {
        self.next_id += 1;
        Instance::start(&guest.shared, &guest.pre, self.next_id - 1)
    }

    /// Starts the current guest as the current instance.
    fn start_current(&mut self) {
        let (shared, pre) = (Arc::clone(&self.guest.shared), self.guest.pre.clone());
        self.next_id += 1;
        self.set_current(Current::Running(Instance::start(&shared, &pre, self.next_id - 1)));
    }

    /// Makes `current` the current state; returns the one it replaces.
    fn set_current(&mut self, current: Current) -> Current {
        self.serving.store(matches!(current, Current::Running(_)), Ordering::SeqCst);
        let old = std::mem::replace(&mut self.current, current);
        self.notify_readiness();
        old
    }

    fn notify_readiness(&mut self) {
        let listeners = &self.guest.shared.sandbox.listeners;
        let ready = ready(listeners, &self.serving).is_ok();
        self.notifier.readiness(ready, &self.guest.shared.sandbox.grants.summary());
    }

    async fn serve(mut self, mut signals: Signals) -> Result<ExitCode> {
        let mut turns = self.guest.shared.sandbox.listeners.turns();
        self.start_current();
        loop {
            // No restart while a swap's new instance starts: the restarted
            // one would be newer, and take the listeners from it. The swap
            // decides.
            let may_restart = !self.swap_starting();
            let event = tokio::select! {
                biased;
                received = signals.next() => Event::Signal(received),
                event = self.current.next(may_restart) => event,
                step = swap::step(&mut self.swap) => Event::Swap(step),
                Some(Ok(drained)) = self.draining.join_next() => Event::Drained(drained),
                Ok(()) = turns.changed() => Event::Turns,
                ready = self.upgrade.ready() => Event::Upgraded(ready),
            };
            if let Some(exit) = self.handle(event, &mut signals).await {
                return exit;
            }
        }
    }

    /// One event; `Some` with the host's exit when it is time to stop.
    async fn handle(&mut self, event: Event, signals: &mut Signals) -> Option<Result<ExitCode>> {
        match event {
            Event::Signal(Received::Stop(signal)) => return Some(Ok(self.stop_now(signal))),
            Event::Signal(Received::Quit(signal)) => {
                return Some(self.stop_gracefully(signal, signals).await)
            }
            Event::Signal(Received::Swap(asked)) if self.swap.is_some() => self.swap_later(asked),
            Event::Signal(Received::Swap(asked)) if self.too_many_draining() => {
                self.swap_after_a_drain(asked)
            }
            Event::Signal(Received::Swap(asked)) => self.start_loading(&asked),
            Event::Signal(Received::Status) => self.status(),
            Event::Signal(Received::Upgrade) => self.upgrade.start(
                || self.guest.shared.sandbox.listeners.handover(),
                self.metrics.as_ref(),
                &mut self.notifier,
            ),
            Event::Upgraded(Ok(pid)) => return Some(self.hand_over(pid, signals).await),
            Event::Upgraded(Err(why)) => self.upgrade.failed(&why, &mut self.notifier),
            Event::Ended(outcome) => return self.ended(outcome),
            Event::RestartDue => self.start_current(),
            Event::Swap(SwapStep::Loaded(component, settings)) => {
                self.start_swap(component, *settings)
            }
            Event::Swap(SwapStep::TookOver(new, guest)) => self.took_over(new, guest),
            Event::Swap(SwapStep::Failed(why)) => return self.swap_failed(&why),
            Event::Drained(drained) => {
                drained.log();
                if self.swap.is_none() {
                    self.swap_ended();
                }
            }
            Event::Turns => self.notify_readiness(),
        }
        None
    }

    fn start_loading(&mut self, asked: &SwapAsked) {
        self.notifier.reloading();
        self.swap = Some(Swap::load(&self.guest.shared, asked));
    }

    fn swap_later(&mut self, asked: SwapAsked) {
        let name = guest::name(self.guest.shared.sandbox.settings.guest.as_deref());
        if let Some(next) = supervise::asked_during_a_swap(asked, &name) {
            self.next_swap = Some(next);
        }
    }

    /// A swap has ended (or a drain): the file that changed meanwhile, if
    /// any, next, once fewer than the most instances drain.
    fn swap_ended(&mut self) {
        if self.too_many_draining() {
            return;
        }
        if let Some(asked) = self.next_swap.take() {
            self.start_loading(&asked);
        }
    }

    /// Whether a swap now would leave more old instances draining than
    /// the ledger counts (`ledger::MAX_DRAINING`).
    fn too_many_draining(&self) -> bool {
        self.draining.len() >= MAX_DRAINING
    }

    /// A swap asked for while the most old instances drain: SIGHUP fails
    /// (`reload` says why); a changed file is swapped in once one of them
    /// has finished.
    fn swap_after_a_drain(&mut self, asked: SwapAsked) {
        let name = guest::name(self.guest.shared.sandbox.settings.guest.as_deref());
        let said = asked.said(&name);
        let timeout = self.guest.shared.sandbox.settings.drain_timeout;
        match asked {
            SwapAsked::Hangup => {
                let why = format!(
                    "{MAX_DRAINING} older guest instances still drain (at most --drain-timeout \
                     {timeout:?}); try again once one has finished"
                );
                swap_failed(&format!("{said}, but {why}"));
                self.notifier.reloaded(Err(&why));
            }
            SwapAsked::FileChanged(_) => {
                tracing::info!(
                    event = "swap",
                    "{said} while {MAX_DRAINING} older guest instances still drain: swapping it \
                     in once one has finished"
                );
                self.next_swap = Some(asked);
            }
        }
    }

    /// SIGUSR1: the instances alive (the current one, one a swap starts,
    /// those draining), and what they hold.
    fn status(&self) {
        let current = usize::from(matches!(self.current, Current::Running(_)));
        let starting = usize::from(self.swap_starting());
        let alive = current + starting + self.draining.len();
        supervise::status(alive, &self.guest.shared.sandbox.caps);
    }

    fn swap_starting(&self) -> bool {
        matches!(self.swap, Some(Swap::Starting { .. }))
    }

    /// SIGINT (or SIGTERM during a graceful stop).
    fn stop_now(&mut self, signal: &str) -> ExitCode {
        self.upgrade.abandon();
        self.notifier.stopping(&format!("{signal} received: stopping"));
        stopped(signal)
    }

    /// The new host serves: it takes every new client from now on, and
    /// this one serves those it has, then exits (a graceful stop that
    /// leaves the listeners open, and no longer serves metrics).
    async fn hand_over(&mut self, pid: u32, signals: &mut Signals) -> Result<ExitCode> {
        self.upgrade.handed_over(pid, self.metrics.take(), &mut self.notifier);
        self.guest.shared.sandbox.listeners.hand_over();
        self.drain_and_exit("upgrade", signals).await
    }

    /// The current instance ended: decide now, or after the swap under way.
    fn ended(&mut self, outcome: Result<()>) -> Option<Result<ExitCode>> {
        let decision = self.decide(outcome);
        if !self.swap_starting() {
            return self.carry_out(decision);
        }
        let why = match &decision {
            Decision::Exit(Ok(_)) => "finished".to_string(),
            Decision::Exit(Err(e)) | Decision::Restart(e) => split_first_line(e).0,
        };
        tracing::warn!(
            event = "swap",
            "the running guest ended ({why}) while a new one is starting: the new one \
             serves if it takes over; if it does not, --restart decides"
        );
        self.set_current(Current::AfterSwap(decision));
        None
    }

    /// What the end of the current instance calls for: exit, or a
    /// restart (`--restart on-failure`).
    fn decide(&mut self, outcome: Result<()>) -> Decision {
        match outcome {
            Ok(()) => {
                tracing::info!("the guest finished");
                Decision::Exit(Ok(ExitCode::SUCCESS))
            }
            Err(failure) if self.guest.shared.sandbox.settings.restart == Restart::OnFailure => {
                Decision::Restart(failure)
            }
            Err(failure) => Decision::Exit(Err(failure)),
        }
    }

    /// Exits, or restarts after the backoff: a failure counts (towards
    /// giving up) when it restarts the guest, not when a swap made that
    /// unneeded.
    fn carry_out(&mut self, decision: Decision) -> Option<Result<ExitCode>> {
        match decision {
            Decision::Exit(exit) => Some(exit),
            Decision::Restart(failure) => {
                let Some(delay) = self.failures.record(std::time::Instant::now()) else {
                    return Some(Err(failure.context(format!(
                        "the guest failed {MAX_FAILURES} times within {}s; not restarting it again",
                        FAILURE_WINDOW.as_secs()
                    ))));
                };
                let (summary, backtrace) = split_first_line(&failure);
                METRICS.guest_restarts.inc();
                tracing::warn!(
                    event = "restart",
                    backtrace,
                    "the guest failed: {summary}; restarting it in {delay:?}"
                );
                // The text log shows no fields: the whole of it, on asking.
                tracing::debug!("{failure:#}");
                self.set_current(Current::Restarting(Instant::now() + delay));
                None
            }
        }
    }

    /// The new guest loaded: link it for the settings just read and start
    /// an instance of it beside the current one, which keeps serving
    /// meanwhile. (A restart that is due waits for the swap's outcome.)
    fn start_swap(&mut self, component: Compiled, settings: Settings) {
        self.swap = None;
        let guest = match self.guest.next(settings, &component) {
            Ok(guest) => guest,
            Err(e) => {
                let why = format!("{e:#}");
                swap_failed(&why);
                self.notifier.reloaded(Err(&why));
                self.swap_ended();
                return;
            }
        };
        // Where the new instance must listen to take over: where the current
        // one holds a listener; if it holds none (yet), every listener the
        // host keeps. Never nowhere: that would retire the current one for
        // an instance that serves no one.
        let listeners = Arc::clone(&self.guest.shared.sandbox.listeners);
        let held = match &self.current {
            Current::Running(current) => listeners.held_by(current.tenant.id),
            _ => Vec::new(),
        };
        let required = if held.is_empty() { listeners.kept() } else { held };
        let instance = self.start(&guest);
        self.swap = Some(Swap::starting(instance, guest, required, &listeners));
    }

    /// The new instance listens everywhere: it is the current one, and its
    /// guest (and settings) are what runs from now on; the old one (if any)
    /// serves only the clients it has.
    fn took_over(&mut self, new: Instance, guest: Linked) {
        self.guest.shared.sandbox.listeners.retire_through(new.tenant.id - 1);
        let timeout = self.guest.shared.sandbox.settings.drain_timeout;
        guest.serves();
        (self.guest, self.swap) = (guest, None);
        if let Current::Running(old) = self.set_current(Current::Running(new)) {
            self.draining.spawn(swap::drain(old, timeout, "swap"));
        }
        self.notifier.reloaded(Ok(()));
        self.swap_ended();
    }

    fn swap_failed(&mut self, why: &str) -> Option<Result<ExitCode>> {
        self.swap = None;
        self.notifier.reloaded(Err(why));
        if !matches!(self.current, Current::AfterSwap(_)) {
            self.swap_ended();
            return None;
        }
        match self.set_current(Current::Ended) {
            Current::AfterSwap(decision) => self.carry_out(decision),
            _ => None,
        }
    }

    /// SIGTERM or SIGQUIT (Ctrl-Break on Windows): no new clients for anyone (the host's listeners close);
    /// every instance (the current one, one a swap was starting, and those
    /// still draining after a swap) serves the clients it has until they
    /// leave or --drain-timeout passes; then the host exits (with the error
    /// it was going to exit with after a swap, if any).
    async fn stop_gracefully(&mut self, signal: &str, signals: &mut Signals) -> Result<ExitCode> {
        self.upgrade.abandon();
        tracing::info!(
            event = "stop",
            "{signal} received: taking no new clients (SIGINT, or SIGTERM again, stops at once)"
        );
        self.notifier
            .stopping(&format!("{signal} received: serving the connected clients, then stopping"));
        self.guest.shared.sandbox.listeners.stop_offering();
        signals.stopping_gracefully();
        self.drain_and_exit("stop", signals).await
    }

    /// Every instance serves the clients it has until they leave or
    /// --drain-timeout passes; then the host exits. (`event`: "stop", or
    /// "upgrade".)
    async fn drain_and_exit(
        &mut self,
        event: &'static str,
        signals: &mut Signals,
    ) -> Result<ExitCode> {
        self.serving.store(false, Ordering::SeqCst);
        let timeout = self.guest.shared.sandbox.settings.drain_timeout;
        if let Some(Swap::Starting { instance, .. }) = self.swap.take() {
            self.draining.spawn(swap::drain(instance, timeout, event));
        }
        let mut exit = Ok(ExitCode::SUCCESS);
        match self.set_current(Current::Stopping) {
            Current::Running(current) => {
                self.draining.spawn(swap::drain(current, timeout, event));
            }
            Current::AfterSwap(Decision::Exit(after_swap)) => exit = after_swap,
            _ => {}
        }
        self.drain_all(signals, exit).await
    }

    /// Waits for every drain; SIGINT or SIGTERM meanwhile stop at once;
    /// a swap asked for and SIGQUIT change nothing.
    async fn drain_all(
        &mut self,
        signals: &mut Signals,
        exit: Result<ExitCode>,
    ) -> Result<ExitCode> {
        loop {
            tokio::select! {
                drained = self.draining.join_next() => match drained {
                    None => return exit,
                    Some(Ok(drained)) => drained.log(),
                    Some(Err(_)) => {}
                },
                received = signals.next() => match received {
                    Received::Stop(signal) => return Ok(stopped(signal)),
                    Received::Swap(asked) => {
                        let name = guest::name(self.guest.shared.sandbox.settings.guest.as_deref());
                        let said = asked.said(&name);
                        tracing::warn!(event = "stop", "{said} while stopping gracefully; ignored")
                    }
                    Received::Status => self.status(),
                    Received::Quit(signal) => supervise::already_stopping(signal, signals),
                    Received::Upgrade => tracing::info!(
                        event = "upgrade",
                        "SIGUSR2 received while stopping; ignored (a new host can start once this one has)"
                    ),
                },
            }
        }
    }
}

/// Ready: a guest instance runs (not restarting, the host not stopping),
/// and one has the turn on every granted address.
fn ready(listeners: &Listeners, serving: &AtomicBool) -> Result<(), String> {
    if !serving.load(Ordering::SeqCst) {
        return Err("no guest instance runs now (starting, restarting, or stopping)".into());
    }
    match listeners.unserved() {
        Some(addr) => Err(format!("no guest listens on {addr} yet")),
        None => Ok(()),
    }
}

/// Recent failures, for the restart backoff and the give-up rule.
#[derive(Default)]
struct Failures(VecDeque<std::time::Instant>);

impl Failures {
    /// Records a failure at `now`; returns how long to wait before
    /// restarting, or None when the guest has failed too often lately.
    fn record(&mut self, now: std::time::Instant) -> Option<Duration> {
        self.0.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        self.0.push_back(now);
        let recent = self.0.len();
        (recent < MAX_FAILURES).then(|| FIRST_BACKOFF * 2u32.pow(recent as u32 - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_then_give_up() {
        let mut failures = Failures::default();
        let now = std::time::Instant::now();
        let delays: Vec<_> = std::iter::from_fn(|| failures.record(now)).collect();
        assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
    }

    /// Five failures within a minute give up; failures older than that are
    /// forgotten, and the backoff starts again from the first delay.
    #[test]
    fn only_failures_within_the_last_minute_count() {
        let mut failures = Failures::default();
        let start = std::time::Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        for seconds in [0, 10, 20, 30] {
            assert!(failures.record(at(seconds)).is_some());
        }
        assert_eq!(failures.record(at(59)), None, "five within a minute");
        let mut failures = Failures::default();
        for seconds in [0, 10, 20, 30] {
            failures.record(at(seconds));
        }
        // The first four are over a minute old by then.
        assert_eq!(failures.record(at(91)), Some(FIRST_BACKOFF));
        assert_eq!(failures.record(at(92)), Some(2 * FIRST_BACKOFF));
    }
}
