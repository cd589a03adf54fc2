//! What asks the host to stop or to swap its guest, on each platform:
//!
//! | asks to            | Unix                          | Windows                     |
//! | ------------------ | ----------------------------- | --------------------------- |
//! | stop gracefully    | SIGTERM, SIGQUIT              | Ctrl-Break                  |
//! | stop at once       | SIGINT (Ctrl-C); SIGTERM again while stopping gracefully | Ctrl-C, closing the console |
//! | swap the guest     | SIGHUP, `--watch`             | `--watch`                   |
//! | say how it is      | SIGUSR1                       |                             |
//! | upgrade the host   | SIGUSR2 (`upgrade.rs`)        |                             |
//!
//! A graceful stop takes no new clients and serves those the host has
//! until they leave or --drain-timeout; a swap is `swap.rs`. SIGTERM is
//! what every supervisor sends first (systemd, Kubernetes, `docker stop`),
//! so it drains: a supervisor that sends it does not drop clients; the
//! second SIGTERM, the one an impatient operator sends, stops at once.
//! Registered once, at start-up.

use crate::watch::Watch;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

pub struct Signals {
    platform: platform::Signals,
    watch: Option<Watch>,
}

pub enum Received {
    /// Stop at once: the signal's (or console event's) name.
    Stop(&'static str),
    /// Stop gracefully: likewise.
    Quit(&'static str),
    /// Swap the guest.
    Swap(SwapAsked),
    /// Write one status line to the log (what the host holds now).
    #[cfg_attr(windows, allow(dead_code))]
    Status,
    /// Hand the listeners to a new host executable (`upgrade.rs`).
    #[cfg_attr(windows, allow(dead_code))]
    Upgrade,
}

/// Why a swap was asked for.
pub enum SwapAsked {
    /// SIGHUP (or `wasi-tcp-host reload`).
    #[cfg_attr(windows, allow(dead_code))]
    Hangup,
    /// `--watch`: the guest file was replaced by this whole component.
    FileChanged(Arc<Vec<u8>>),
}

impl SwapAsked {
    /// For log lines: "SIGHUP received", "guest.wasm changed".
    pub fn said(&self, guest: &str) -> String {
        match self {
            SwapAsked::Hangup => "SIGHUP received".to_string(),
            SwapAsked::FileChanged(_) => format!("{guest} changed"),
        }
    }

    /// The new guest's bytes, when the watch read them already (so that
    /// what is loaded is what was checked whole).
    pub fn bytes(&self) -> Option<Arc<Vec<u8>>> {
        match self {
            SwapAsked::Hangup => None,
            SwapAsked::FileChanged(bytes) => Some(Arc::clone(bytes)),
        }
    }
}

impl Signals {
    /// Installs the handlers; with `watch`, watches that guest file too.
    pub fn install(watch: Option<&Path>) -> Result<Self> {
        let platform = platform::Signals::install()?;
        let watch = watch.map(Watch::start).transpose()?;
        Ok(Signals { platform, watch })
    }

    /// A request to stop at once (SIGINT, or SIGTERM: nothing to drain
    /// yet, or a graceful stop already under way): its name.
    pub async fn stop(&mut self) -> &'static str {
        self.platform.stop().await
    }

    /// A graceful stop is under way: from now on SIGTERM stops at once.
    pub fn stopping_gracefully(&mut self) {
        self.platform.stopping_gracefully = true;
    }

    /// The next request.
    pub async fn next(&mut self) -> Received {
        let changed = async {
            match &mut self.watch {
                Some(watch) => watch.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            received = self.platform.next() => received,
            bytes = changed => Received::Swap(SwapAsked::FileChanged(bytes)),
        }
    }
}

#[cfg(unix)]
mod platform {
    use super::*;
    use tokio::signal::unix::{signal, Signal, SignalKind};

    pub struct Signals {
        interrupt: Signal,
        terminate: Signal,
        quit: Signal,
        hangup: Signal,
        status: Signal,
        upgrade: Signal,
        /// Whether SIGTERM now stops at once (it drains the first time).
        pub stopping_gracefully: bool,
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
                status: install(SignalKind::user_defined1(), "SIGUSR1")?,
                upgrade: install(SignalKind::user_defined2(), "SIGUSR2")?,
                stopping_gracefully: false,
            })
        }

        pub async fn stop(&mut self) -> &'static str {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }

        pub async fn next(&mut self) -> Received {
            let terminate = match self.stopping_gracefully {
                true => Received::Stop("SIGTERM"),
                false => Received::Quit("SIGTERM"),
            };
            tokio::select! {
                biased;
                _ = self.interrupt.recv() => Received::Stop("SIGINT"),
                _ = self.terminate.recv() => terminate,
                _ = self.quit.recv() => Received::Quit("SIGQUIT"),
                _ = self.hangup.recv() => Received::Swap(SwapAsked::Hangup),
                _ = self.status.recv() => Received::Status,
                _ = self.upgrade.recv() => Received::Upgrade,
            }
        }
    }
}

/// Windows has console control events, not signals. Ctrl-C and closing
/// the console window stop the host; Ctrl-Break, which a program may
/// handle however it likes, is the graceful stop. (Windows gives a
/// process a few seconds after the console closes: enough to stop, not
/// to drain.)
#[cfg(windows)]
mod platform {
    use super::*;
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, CtrlBreak, CtrlC, CtrlClose};

    pub struct Signals {
        interrupt: CtrlC,
        close: CtrlClose,
        brk: CtrlBreak,
        /// Unused: no console event means "stop gracefully, then at once".
        pub stopping_gracefully: bool,
    }

    impl Signals {
        pub fn install() -> Result<Self> {
            Ok(Signals {
                interrupt: ctrl_c().context("installing the Ctrl-C handler")?,
                close: ctrl_close().context("installing the console-close handler")?,
                brk: ctrl_break().context("installing the Ctrl-Break handler")?,
                stopping_gracefully: false,
            })
        }

        pub async fn stop(&mut self) -> &'static str {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.close.recv() => "console close",
            }
        }

        pub async fn next(&mut self) -> Received {
            tokio::select! {
                biased;
                _ = self.interrupt.recv() => Received::Stop("Ctrl-C"),
                _ = self.close.recv() => Received::Stop("console close"),
                _ = self.brk.recv() => Received::Quit("Ctrl-Break"),
            }
        }
    }
}
