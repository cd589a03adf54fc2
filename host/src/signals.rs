//! The signals the host answers: SIGINT (Ctrl-C) and SIGTERM stop it at
//! once, SIGQUIT stops it gracefully (no new clients; those it has are
//! served until they leave or --drain-timeout), SIGHUP swaps the guest
//! (`swap.rs`). Registered once, at start-up.

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    quit: Signal,
    hangup: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Signals {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// SIGINT or SIGTERM: its name.
    pub async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            biased;
            _ = self.interrupt.recv() => Received::Stop("SIGINT"),
            _ = self.terminate.recv() => Received::Stop("SIGTERM"),
            _ = self.quit.recv() => Received::Quit,
            _ = self.hangup.recv() => Received::Hangup,
        }
    }
}

pub enum Received {
    Stop(&'static str),
    Quit,
    Hangup,
}
