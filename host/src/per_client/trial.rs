//! A guest's trial, before it serves clients one instance each: at start,
//! and at each swap. One instance of it runs with no client (stdin never
//! has a byte; `sockets::TrialStdio`); it passes once it asks its stdin
//! for a first byte (it is ready for a client), or once it ends cleanly
//! without asking (a guest that answers without reading). It fails if it
//! traps, exits with a failure, or does neither within [`TRIAL_WITHIN`]:
//! then it serves no one, at start the host exits with the reason, and a
//! swap fails as it does without `--per-client` (the old guest keeps
//! serving, `reload` says why).

use crate::instance::run_once;
use crate::sandbox::Stdio;
use crate::sockets::{Tenant, TrialStdio};
use crate::supervise::Linked;
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::Duration;

/// How long a trial instance has to ask for its first byte.
const TRIAL_WITHIN: Duration = Duration::from_secs(10);

/// The id of trial instances, in log lines (clients' instances count from 1).
const TRIAL_ID: u64 = 0;

/// Runs `guest`'s trial instance; Err says how it failed.
pub async fn run(guest: &Linked) -> Result<()> {
    let stdio = TrialStdio::default();
    let shared = Arc::clone(&guest.shared);
    let instance =
        run_once(shared, guest.pre.clone(), Tenant::new(TRIAL_ID), Stdio::Trial(stdio.clone()));
    let instance = crate::logging::INSTANCE.scope("#0 trial, no client".to_string(), instance);
    tokio::select! {
        () = stdio.read_asked() => Ok(()),
        ended = instance => match ended {
            Ok(()) => Ok(()),
            Err(e) => Err(e.context("its trial instance, with no client, failed")),
        },
        () = tokio::time::sleep(TRIAL_WITHIN) => bail!(
            "its trial instance, with no client, neither read its stdin nor finished within \
             {TRIAL_WITHIN:?}"
        ),
    }
}
