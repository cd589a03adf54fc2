//! SIGHUP or `--watch`: swap the guest for a freshly loaded one without closing the
//! port (the signal nginx and systemd's `ExecReload` use).
//!
//! 1. The policy file is read again (what it says applies to the new
//!    instance; what only a restart can change is refused), and the guest
//!    file is loaded again, compiled off the serving thread; the running
//!    instance serves meanwhile.
//! 2. A new instance starts beside it. As it binds the granted addresses it
//!    is lent the same listeners; from then on the old instance is offered
//!    no new clients (`Listeners::lend`).
//! 3. Once the new instance listens everywhere the old one did, it has taken
//!    over. The old one keeps serving the clients it has, until they leave
//!    or `--drain-timeout` passes, then stops.
//!
//! If the new guest fails to load, to start, or to listen where the old one
//! did (within `LISTEN_WITHIN`), it is stopped, its listeners go back to the
//! old instance, and one line says why. Until the new one listens, the old
//! one is offered every client (`Listeners`' turns), and it is offered them
//! again if the new one fails: a client still waiting to be accepted when a
//! swap fails is served all the same (one the new instance had accepted
//! goes with it). Each step is an audit event (`swap`).

use crate::instance::{command_pre, Instance, Shared};
use crate::metrics::{self, DrainOutcome, SwapOutcome};
use crate::sandbox::{self, GuestState, Sandbox};
use crate::settings::Settings;
use crate::signals::SwapAsked;
use crate::sockets::{Caps, Listeners};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::component::Component;
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;

/// The guest `new` settings name: from the bytes `--watch` read, when it
/// is still the file watched (the policy may have named another).
pub async fn load_guest(
    engine: &Engine,
    old: &Settings,
    new: &Settings,
    read: Option<Arc<Vec<u8>>>,
) -> Result<Component> {
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

/// How long a new instance has to listen where the old one did.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// What runs: the settings and sandbox, and the guest linked for them.
pub struct Guest {
    pub shared: Arc<Shared>,
    pub pre: CommandPre<GuestState>,
}

impl Guest {
    /// `component`, linked for `settings`, with the host's engine, its
    /// listeners and its caps.
    pub fn new(
        engine: &Engine,
        (listeners, caps): (&Arc<Listeners>, &Caps),
        settings: Settings,
        component: &Component,
    ) -> Result<Guest> {
        let linker = sandbox::linker(engine, &settings)?;
        let pre = command_pre(&linker, component)?;
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
        Ok(Guest { shared, pre })
    }

    /// Another guest, with new settings, in the same host.
    pub fn next(&self, settings: Settings, component: &Component) -> Result<Guest> {
        let Shared { engine, sandbox } = &*self.shared;
        Guest::new(engine, (&sandbox.listeners, &sandbox.caps), settings, component)
    }
}

pub enum Swap {
    Loading(JoinHandle<Result<(Component, Settings)>>),
    Starting {
        instance: Instance,
        guest: Guest,
        /// The places (kept listeners) the old instance held.
        required: Vec<usize>,
        listeners: Arc<Listeners>,
        deadline: Instant,
    },
}

pub enum SwapStep {
    Loaded(Component, Settings),
    TookOver(Instance, Guest),
    Failed(String),
}

impl Swap {
    /// Reads the policy file again and loads the guest file again (or
    /// takes the bytes `--watch` read and checked).
    pub fn load(shared: &Arc<Shared>, asked: &SwapAsked) -> Swap {
        let settings = &shared.sandbox.settings;
        let name = crate::guest::name(settings.guest.as_deref());
        let said = asked.said(&name);
        tracing::info!(event = "swap", "{said}: loading {name} again, to swap it in");
        let (engine, settings, read) = (shared.engine.clone(), Arc::clone(settings), asked.bytes());
        Swap::Loading(tokio::spawn(async move {
            let new = reload_policy(&settings).await?;
            let component = load_guest(&engine, &settings, &new, read).await?;
            Ok((component, new))
        }))
    }

    pub fn starting(
        instance: Instance,
        guest: Guest,
        required: Vec<usize>,
        listeners: &Arc<Listeners>,
    ) -> Swap {
        let (listeners, deadline) = (Arc::clone(listeners), Instant::now() + LISTEN_WITHIN);
        Swap::Starting { instance, guest, required, listeners, deadline }
    }
}

/// The next step of the swap under way; never, when there is none.
pub async fn step(swap: &mut Option<Swap>) -> SwapStep {
    match swap {
        None => std::future::pending().await,
        Some(Swap::Loading(task)) => match task.await {
            Ok(Ok((component, settings))) => SwapStep::Loaded(component, settings),
            Ok(Err(e)) => fail(&format!("{e:#}")),
            Err(e) => fail(&format!("loading the guest: {e}")),
        },
        Some(Swap::Starting { instance, required, listeners, deadline, .. }) => {
            let where_ =
                required.iter().map(|p| listeners.grant(*p).to_string()).collect::<Vec<_>>();
            let where_ = where_.join(", ");
            let tenant = Arc::clone(&instance.tenant);
            loop {
                let listening = listeners.listened_on_by(tenant.id);
                if required.iter().all(|place| listening.contains(place)) {
                    break;
                }
                tokio::select! {
                    () = tenant.changed() => {}
                    outcome = instance.ended() => {
                        let why = match outcome {
                            Ok(()) => "finished".to_string(),
                            Err(e) => format!("{e:#}").lines().next().unwrap_or_default().to_string(),
                        };
                        return fail(&format!("the new guest ended before listening on {where_} ({why})"));
                    }
                    () = tokio::time::sleep_until(*deadline) => {
                        return fail(&format!(
                            "the new guest did not listen on {where_} within {LISTEN_WITHIN:?}"
                        ));
                    }
                }
            }
            let Some(Swap::Starting { instance, guest, .. }) = swap.take() else {
                unreachable!("matched above")
            };
            metrics::swapped(SwapOutcome::TookOver);
            tracing::info!(
                event = "swap",
                "swap: the new guest instance #{} listens on {where_} and takes every new client",
                instance.tenant.id
            );
            SwapStep::TookOver(instance, guest)
        }
    }
}

/// One line for a swap that did not happen; the running guest keeps going.
pub fn failed(why: &str) {
    metrics::swapped(SwapOutcome::Failed);
    tracing::warn!(event = "swap", "swap failed: {why}; the running guest keeps serving");
}

fn fail(why: &str) -> SwapStep {
    failed(why);
    SwapStep::Failed(why.to_string())
}

/// How an old instance's drain ended.
pub struct Drained {
    id: u64,
    end: DrainEnd,
    timeout: Duration,
    /// "swap", or "stop" (SIGQUIT): the audit event and the lines' prefix.
    event: &'static str,
}

enum DrainEnd {
    NoClients,
    TimedOut(usize),
    Ended(Option<String>),
}

/// Lets an instance offered no more clients serve those it has until they
/// leave or `timeout` passes; then it is stopped (dropped).
pub async fn drain(mut old: Instance, timeout: Duration, event: &'static str) -> Drained {
    let id = old.tenant.id;
    tracing::info!(
        event,
        "{event}: guest instance #{id} takes no new clients; it serves its {} until they leave (--drain-timeout {timeout:?})",
        old.tenant.clients()
    );
    let deadline = Instant::now() + timeout;
    let tenant = Arc::clone(&old.tenant);
    let end = loop {
        if tenant.clients() == 0 {
            break DrainEnd::NoClients;
        }
        tokio::select! {
            () = tenant.changed() => {}
            outcome = old.ended() => break DrainEnd::Ended(outcome.err().map(|e| format!("{e:#}"))),
            () = tokio::time::sleep_until(deadline) => break DrainEnd::TimedOut(tenant.clients()),
        }
    };
    Drained { id, end, timeout, event }
}

impl Drained {
    pub fn log(&self) {
        metrics::drained(match self.end {
            DrainEnd::NoClients => DrainOutcome::NoClients,
            DrainEnd::TimedOut(_) => DrainOutcome::TimedOut,
            DrainEnd::Ended(_) => DrainOutcome::Ended,
        });
        let (id, event) = (self.id, self.event);
        match &self.end {
            DrainEnd::NoClients => {
                tracing::info!(event, "{event}: guest instance #{id} has no clients left; stopped it")
            }
            DrainEnd::TimedOut(left) => tracing::warn!(
                event,
                "{event}: guest instance #{id} still had {left} clients after --drain-timeout {:?}; stopped it",
                self.timeout
            ),
            DrainEnd::Ended(None) => tracing::info!(event, "{event}: guest instance #{id} finished"),
            DrainEnd::Ended(Some(why)) => tracing::warn!(
                event,
                "{event}: guest instance #{id} failed while draining: {}",
                why.lines().next().unwrap_or_default()
            ),
        }
    }
}
