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
//!   SIGQUIT closes the listeners and waits up to `--drain-timeout` for
//!   the instances running; SIGINT and SIGTERM stop them all at once.

mod client;
mod listen;
mod pool;
mod trial;

use crate::epoch::EpochTicker;
use crate::notify::Notifier;
use crate::observe;
use crate::settings::Settings;
use crate::signals::{Received, Signals, SwapAsked};
use crate::sockets::activation::Handed;
use crate::sockets::{Caps, Listeners};
use crate::supervise::{self, Linked};
use anyhow::{Context, Result};
use client::Clients;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;
use wasmtime::component::Component;
use wasmtime::Engine;

pub async fn run(mut settings: Settings, handed: Vec<Handed>) -> Result<ExitCode> {
    let mut signals = Signals::install(supervise::watched(&settings))?;
    supervise::account(&settings)?;
    let listeners = listen::open(&settings.grants.listen, handed)?;
    let metrics = settings.metrics.map(observe::bind).transpose()?;
    if let Some(bound) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
        settings.metrics_bound_at(bound);
    }
    let limits = settings.limits;
    // One instance for each client, and one for a trial.
    let config = pool::config(limits.max_connections + 1, limits.max_memory.0);
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("reserving the pool of guest instances")?;
    let (path, cache) = (settings.guest.as_deref(), settings.cache_dir.as_deref());
    let component = tokio::select! {
        loaded = crate::guest::load_in_background(&engine, path, None, cache) => loaded?,
        signal = signals.stop() => return Ok(supervise::stopped(signal)),
    };
    let _ticker = EpochTicker::start(&engine)?;
    let name = crate::guest::name(settings.guest.as_deref());
    warn_if_it_serves_clients_itself(&engine, &component, &name);
    let settings = Arc::new(settings);
    let guest =
        link(&engine, &settings, &component, Caps::new(limits.max_connections, limits.max_files))?;
    tokio::select! {
        tried = trial::run(&guest) => tried.with_context(|| format!("{name} cannot serve"))?,
        signal = signals.stop() => return Ok(supervise::stopped(signal)),
    }
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
    if let Some(metrics) = metrics {
        let stopping = Arc::clone(&stopping);
        let ready: observe::Readiness = Arc::new(move || match stopping.load(Ordering::SeqCst) {
            true => Err("stopping: no new clients".to_string()),
            false => Ok(()),
        });
        tokio::spawn(observe::serve(metrics, ready));
    }
    let mut server = Server { engine, settings, clients, accepting, stopping };
    server.serve(signals).await
}

/// `component` linked for an instance per client: the host's sandbox, with
/// no listen address of its own (the host listens) and nothing to lend.
/// The one socket cap (`cap`) counts the clients' connections and the
/// sockets the instances open, whichever guest they run.
fn link(engine: &Engine, settings: &Settings, component: &Component, caps: Caps) -> Result<Linked> {
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
    engine: Engine,
    settings: Arc<Settings>,
    clients: Arc<Clients>,
    accepting: Vec<JoinHandle<()>>,
    /// For `/readyz`: false from SIGQUIT on.
    stopping: Arc<AtomicBool>,
}

/// SIGHUP: the guest and the policy, loading.
type Loading = JoinHandle<Result<(Linked, Arc<Settings>)>>;

enum Event {
    Signal(Received),
    Loaded(Result<(Linked, Arc<Settings>)>),
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
        loop {
            if let (None, Some(asked)) = (&loading, next.take()) {
                notifier.reloading();
                loading = Some(self.load_again(&asked));
            }
            let event = tokio::select! {
                received = signals.next() => Event::Signal(received),
                event = loaded(&mut loading) => event,
            };
            match event {
                Event::Signal(Received::Stop(signal)) => {
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

    /// SIGQUIT (Ctrl-Break): no new clients (the listeners close), and
    /// those connected are served until they leave or `--drain-timeout`.
    async fn stop_gracefully(&mut self, signal: &str, signals: &mut Signals) -> ExitCode {
        self.stopping.store(true, Ordering::SeqCst);
        self.accepting.iter().for_each(JoinHandle::abort);
        for accepting in self.accepting.drain(..) {
            let _ = accepting.await;
        }
        let (open, timeout) = (self.clients.open(), self.settings.drain_timeout);
        tracing::info!(
            event = "stop",
            "{signal} received: the listeners are closed; serving the {open} clients connected \
             until they leave (at most {})",
            humantime::format_duration(timeout)
        );
        let ended = tokio::select! {
            ended = tokio::time::timeout(timeout, self.clients.all_left()) => ended.is_ok(),
            signal = signals.stop() => {
                tracing::info!(event = "stop", "{signal} received: stopping every instance");
                return ExitCode::SUCCESS;
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
