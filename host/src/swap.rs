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

use crate::guest::Compiled;
use crate::instance::{Instance, Shared};
use crate::metrics::{self, DrainOutcome, SwapOutcome};
use crate::settings::Settings;
use crate::signals::SwapAsked;
use crate::sockets::Listeners;
use crate::supervise::{load_guest, reload_policy, swap_failed, Linked};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a new instance has to listen where the old one did.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// The swap under way (one per host at most).
#[allow(clippy::large_enum_variant)]
pub enum Swap {
    Loading(JoinHandle<Result<(Compiled, Settings)>>),
    Starting {
        instance: Instance,
        guest: Linked,
        /// The granted addresses (their indices) the old instance held.
        required: Vec<usize>,
        listeners: Arc<Listeners>,
        deadline: Instant,
    },
}

pub enum SwapStep {
    /// The new guest, and the settings it runs with (boxed: they are large).
    Loaded(Compiled, Box<Settings>),
    TookOver(Instance, Linked),
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
        guest: Linked,
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
            Ok(Ok((component, settings))) => SwapStep::Loaded(component, Box::new(settings)),
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
                if required.iter().all(|granted| listening.contains(granted)) {
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

fn fail(why: &str) -> SwapStep {
    swap_failed(why);
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
