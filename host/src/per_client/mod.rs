//! `--per-client`: one guest instance per client, the inetd way.
//!
//! The host listens on each `--listen` address itself. For every client it
//! accepts (after `--allow-client`) it starts a fresh instance of the
//! guest, whose stdin reads from the connection and whose stdout writes to
//! it (`client.rs`, `sockets/stdio.rs`). Any `wasi:cli` command serves, sockets or
//! not: `cat` is an echo server.
//!
//! - Isolation: instances share nothing but the compiled code; a trap or a
//!   memory bomb costs one client. `--max-memory` and `--cpu-budget` apply
//!   to each instance.
//! - `--max-connections` caps the instances alive at once. A client beyond
//!   it is not accepted: it waits in the listen backlog for a place,
//!   rather than being turned away.
//! - Instances come from wasmtime's pooling allocator (`pool.rs`), on a
//!   runtime with `--threads` threads: one instance runs on one thread at
//!   a time, and many instances use every core.
//! - Before a guest serves anyone (at start, and at each swap), one
//!   instance of it must show that it runs (`trial.rs`): it asks its stdin
//!   for a byte, or finishes cleanly, with no client.
//! - SIGHUP loads the guest (and the policy) again: new clients get the
//!   new guest, once its trial passed, and the instances running finish
//!   with the old one.
//!   SIGTERM or SIGQUIT closes the listeners and waits up to
//!   `--drain-timeout` for the instances running; SIGINT (or SIGTERM
//!   again) stops them all at once.

mod client;
mod listen;
mod pool;
mod trial;
mod trim;

use crate::epoch::EpochTicker;
use crate::guest::Compiled;
use crate::notify::Notifier;
use crate::observe;
use crate::settings::Settings;
use crate::signals::{Received, Signals, SwapAsked};
use crate::sockets::{Caps, Listeners};
use crate::supervise::{self, Linked};
use crate::upgrade::{Given, Upgrading};
use anyhow::{Context, Result};
use client::Clients;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;
use wasmtime::component::Component;
use wasmtime::Engine;

pub async fn run(mut settings: Settings, given: Given) -> Result<ExitCode> {
    let mut signals = Signals::install(supervise::watched(&settings))?;
    supervise::account(&settings)?;
    let listen::Opened { listeners, handover } =
        listen::open(&settings.grants.listen, given.listeners)?;
    let metrics = observe::listener(settings.metrics, given.metrics)?;
    if let Some(bound) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
        settings.metrics_bound_at(bound);
    }
    let limits = settings.limits;
    // One instance for each client, and one for a trial.
    let config = pool::config(limits.max_connections + 1, limits.max_memory.0);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("reserving the pool of guest instances")?;
    if let Some(interval) = crate::notify::watchdog_interval() {
        tokio::spawn(crate::notify::feed_the_watchdog(interval));
    }
    let ready = Arc::new(observe::ReadyLater::default());
    let metrics = metrics.map(|listener| observe::Served::start(listener, Arc::clone(&ready)));
    let (path, cache) = (settings.guest.as_deref(), settings.cache_dir.as_deref());
    let component = tokio::select! {
        loaded = crate::guest::load_in_background(&engine, path, None, cache) => loaded?,
        signal = signals.stop() => return Ok(supervise::stopped(signal)),
    };
    let ticker = EpochTicker::start(&engine)?;
    let name = crate::guest::name(settings.guest.as_deref());
    warn_if_it_serves_clients_itself(&engine, &component.component, &name);
    let settings = Arc::new(settings);
    let guest =
        link(&engine, &settings, &component, Caps::new(limits.max_connections, limits.max_files))?;
    tokio::select! {
        tried = trial::run(&guest) => tried.with_context(|| format!("{name} cannot serve"))?,
        signal = signals.stop() => return Ok(supervise::stopped(signal)),
    }
    guest.serves();
    // The linked guest holds what it needs; the engine (and its pool) must
    // not outlive it here: `trim.rs` makes them afresh.
    drop(component);
    let clients = Clients::new(guest, &settings);
    tracing::info!(
        "running {name}, one instance per client ({} threads); granted: {}; everything else is \
         denied",
        settings.threads,
        settings.grants.summary()
    );
    supervise::announce(&settings);
    let accepting: Vec<JoinHandle<()>> =
        listeners.into_iter().map(|l| tokio::spawn(Arc::clone(&clients).accept(l))).collect();
    let stopping = Arc::new(AtomicBool::new(false));
    let stopping_ = Arc::clone(&stopping);
    ready.set(Arc::new(move || match stopping_.load(Ordering::SeqCst) {
        true => Err("stopping: no new clients".to_string()),
        false => Ok(()),
    }));
    let mut server = Server {
        engine,
        ticker,
        settings,
        clients,
        accepting,
        stopping,
        handover,
        metrics,
        upgrade: Upgrading::default(),
    };
    server.serve(signals).await
}

/// `component` linked for an instance per client: the host's sandbox, with
/// no listen address of its own (the host listens) and nothing to lend.
/// The one socket cap (`cap`) counts the clients' connections and the
/// sockets the instances open, whichever guest they run.
fn link(engine: &Engine, settings: &Settings, component: &Compiled, caps: Caps) -> Result<Linked> {
    let none = Listeners::open(&[], Vec::new())?;
    Linked::new(engine, (&none, &caps), settings.for_each_client(), component)
}

/// A guest that opens TCP sockets serves clients itself: one instance per
/// client is not for it (it gets no listen address; each client's bytes
/// wait on a stdin it never reads). It runs all the same, and fails.
fn warn_if_it_serves_clients_itself(engine: &Engine, component: &Component, name: &str) {
    let ty = component.component_type();
    if crate::inspect::serves_clients_itself(ty.imports(engine).map(|(import, _)| import)) {
        tracing::warn!(
            "{name} opens TCP sockets of its own, so it serves clients itself: with --per-client \
             it gets no listen address, and each client's bytes come on its stdin \
             (`wasi-tcp-host inspect` says which guests suit --per-client)"
        );
    }
}

struct Server {
    /// The engine (and pool) guests are loaded into, and its ticker; made
    /// afresh after a burst (`trim.rs`).
    engine: Engine,
    ticker: EpochTicker,
    settings: Arc<Settings>,
    clients: Arc<Clients>,
    accepting: Vec<JoinHandle<()>>,
    /// For `/readyz`: false from SIGQUIT on.
    stopping: Arc<AtomicBool>,
    /// Copies of the listeners, for an upgrade's new host, and whether a
    /// service manager holds each too.
    handover: Vec<(socket2::Socket, bool)>,
    metrics: Option<observe::Served>,
    /// A new host executable, started and not serving yet (`upgrade.rs`).
    upgrade: Upgrading,
}

/// SIGHUP: the guest and the policy, loading.
type Loading = JoinHandle<Result<(Linked, Arc<Settings>)>>;

enum Event {
    Signal(Received),
    Loaded(Result<(Linked, Arc<Settings>)>),
    /// An upgrade's new host serves (its process id), or will not.
    Upgraded(Result<u32>),
    /// Time to look whether the pool should be made afresh.
    Trim,
}

async fn loaded(loading: &mut Option<Loading>) -> Event {
    let Some(handle) = loading else { return std::future::pending().await };
    let outcome = handle.await.context("loading the guest").and_then(|loaded| loaded);
    *loading = None;
    Event::Loaded(outcome)
}

impl Server {
    async fn serve(&mut self, mut signals: Signals) -> Result<ExitCode> {
        let mut notifier = Notifier::from_env();
        notifier.readiness(true, &self.settings.grants.summary());
        let mut loading: Option<Loading> = None;
        // The guest file changed while a swap was loading (`--watch`): the
        // newest bytes, loaded once it is done.
        let mut next: Option<SwapAsked> = None;
        let mut trim = tokio::time::interval(trim::CHECK_EVERY);
        loop {
            if let (None, Some(asked)) = (&loading, next.take()) {
                notifier.reloading();
                loading = Some(self.load_again(&asked));
            }
            let event = tokio::select! {
                received = signals.next() => Event::Signal(received),
                event = loaded(&mut loading) => event,
                ready = self.upgrade.ready() => Event::Upgraded(ready),
                _ = trim.tick() => Event::Trim,
            };
            match event {
                Event::Signal(Received::Stop(signal)) => {
                    self.upgrade.abandon();
                    notifier.stopping(&format!("{signal} received: stopping"));
                    return Ok(supervise::stopped(signal));
                }
                Event::Signal(Received::Quit(signal)) => {
                    notifier.stopping(&format!("{signal} received: serving the clients connected"));
                    return Ok(self.stop_gracefully(signal, &mut signals).await);
                }
                Event::Signal(Received::Swap(asked)) if loading.is_some() => {
                    let name = crate::guest::name(self.settings.guest.as_deref());
                    next = supervise::asked_during_a_swap(asked, &name).or(next);
                }
                Event::Signal(Received::Swap(asked)) => {
                    notifier.reloading();
                    loading = Some(self.load_again(&asked));
                }
                Event::Signal(Received::Status) => {
                    supervise::status(self.clients.open(), &self.clients.caps())
                }
                Event::Signal(Received::Upgrade) => self.upgrade.start(
                    || self.handover.iter().map(|(l, held)| Ok((l.try_clone()?, *held))).collect(),
                    self.metrics.as_ref(),
                    &mut notifier,
                ),
                Event::Upgraded(Ok(pid)) => {
                    return Ok(self.hand_over(pid, &mut notifier, &mut signals).await)
                }
                Event::Upgraded(Err(why)) => self.upgrade.failed(&why, &mut notifier),
                Event::Trim if loading.is_none() => self.trim(),
                Event::Trim => {}
                Event::Loaded(Ok((guest, settings))) => {
                    self.clients.swap(guest);
                    self.settings = settings;
                    notifier.reloaded(Ok(()));
                }
                Event::Loaded(Err(e)) => {
                    let why = format!("{e:#}");
                    supervise::swap_failed(&why);
                    notifier.reloaded(Err(&why));
                }
            }
        }
    }

    /// After a burst, with no instance alive: a fresh pool (`trim.rs`).
    fn trim(&mut self) {
        let peak = self.clients.peak();
        if !trim::due(self.clients.open(), peak) {
            return;
        }
        let old = self.clients.guest();
        match trim::fresh(&old, &self.settings) {
            Ok((engine, ticker, fresh)) => {
                tracing::info!(
                    event = "trim",
                    "per-client: {peak} instances were alive at once, none is now: the pool is \
                     made afresh, giving their memory back"
                );
                let old = self.clients.refresh(fresh);
                let old_ticker = std::mem::replace(&mut self.ticker, ticker);
                self.engine = engine;
                tokio::spawn(trim::let_go(old, old_ticker));
            }
            Err(e) => tracing::warn!(event = "trim", "could not make the pool afresh: {e:#}"),
        }
    }

    /// SIGHUP or `--watch`: the policy file and the guest file, read
    /// again, off the serving threads.
    fn load_again(&self, asked: &SwapAsked) -> Loading {
        let name = crate::guest::name(self.settings.guest.as_deref());
        let said = asked.said(&name);
        tracing::info!(event = "swap", "{said}: loading {name} again, for new clients");
        let (engine, settings) = (self.engine.clone(), Arc::clone(&self.settings));
        let (caps, read) = (self.clients.caps(), asked.bytes());
        tokio::spawn(async move {
            let new = supervise::reload_policy(&settings).await?;
            let component = supervise::load_guest(&engine, &settings, &new, read).await?;
            let guest = link(&engine, &new, &component, caps)?;
            trial::run(&guest).await.context("the new guest cannot serve")?;
            Ok((guest, Arc::new(new)))
        })
    }

    /// SIGTERM or SIGQUIT (Ctrl-Break): no new clients (the listeners close), and
    /// those connected are served until they leave or `--drain-timeout`.
    async fn stop_gracefully(&mut self, signal: &str, signals: &mut Signals) -> ExitCode {
        self.upgrade.abandon();
        signals.stopping_gracefully();
        self.stop_accepting().await;
        let (open, timeout) = (self.clients.open(), self.settings.drain_timeout);
        tracing::info!(
            event = "stop",
            "{signal} received: the listeners are closed; serving the {open} clients connected \
             until they leave (at most {})",
            humantime::format_duration(timeout)
        );
        self.drain(signals).await
    }

    /// The new host serves: it accepts every new client from now on (the
    /// listeners stay open in it); this one serves those it has, then exits.
    async fn hand_over(
        &mut self,
        pid: u32,
        notifier: &mut Notifier,
        signals: &mut Signals,
    ) -> ExitCode {
        self.upgrade.handed_over(pid, self.metrics.take(), notifier);
        self.stop_accepting().await;
        self.drain(signals).await
    }

    /// Accepts no client from now on: this process's listeners close
    /// (another process's copy, an upgrade's or a service manager's, stays).
    async fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.handover.clear();
        self.accepting.iter().for_each(JoinHandle::abort);
        for accepting in self.accepting.drain(..) {
            let _ = accepting.await;
        }
    }

    /// Serves the clients connected until they leave or `--drain-timeout`;
    /// SIGINT (or SIGTERM, once stopping gracefully) stops them at once.
    async fn drain(&mut self, signals: &mut Signals) -> ExitCode {
        let timeout = self.settings.drain_timeout;
        let all_left = tokio::time::timeout(timeout, self.clients.all_left());
        tokio::pin!(all_left);
        let ended = loop {
            tokio::select! {
                ended = &mut all_left => break ended.is_ok(),
                received = signals.next() => match received {
                    Received::Stop(signal) => {
                        tracing::info!(event = "stop", "{signal} received: stopping every instance");
                        return ExitCode::SUCCESS;
                    }
                    Received::Quit(signal) => supervise::already_stopping(signal, signals),
                    Received::Status => supervise::status(self.clients.open(), &self.clients.caps()),
                    Received::Swap(_) | Received::Upgrade => tracing::info!(
                        event = "stop",
                        "a swap or an upgrade asked for while stopping; ignored"
                    ),
                },
            }
        };
        match ended {
            true => tracing::info!(event = "stop", "stop: every client has left; stopped"),
            false => tracing::warn!(
                event = "stop",
                "stop: --drain-timeout passed with {} clients connected; stopping their instances",
                self.clients.open()
            ),
        }
        ExitCode::SUCCESS
    }
}
