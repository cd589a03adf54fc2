//! Integration tests: the real `host` binary, real guest components, real
//! TCP clients on loopback. Every host listens on a system-picked port
//! (`--listen 127.0.0.1:0`), and a test waits for readiness by connecting.
//! They run on the tests' own runner (`support/harness.rs`): a time limit
//! for each, and needs.

mod support;

mod concurrency;
mod echo;
mod errors;
mod floods;
mod hostile;
mod inspect;
mod lesson;
mod meta;
#[cfg(target_os = "linux")]
mod nodelay;
mod observe;
mod operate;
mod output;
mod per_client;
mod sandbox;
mod shutdown;
mod sockets;
mod swap;
mod swaps_and_drains;
mod sweep;
mod totals;
#[cfg(target_os = "linux")]
mod upgrade;
mod watch;

/// Every test of this target, registered (the meta-test of the promise
/// table in docs/tests.md reads this list too).
pub fn all() -> Vec<libtest_mimic::Trial> {
    [
        concurrency::tests(),
        echo::tests(),
        errors::tests(),
        floods::tests(),
        hostile::tests(),
        inspect::tests(),
        lesson::tests(),
        meta::tests(),
        #[cfg(target_os = "linux")]
        nodelay::tests(),
        observe::tests(),
        operate::tests(),
        output::tests(),
        per_client::tests(),
        sandbox::tests(),
        shutdown::tests(),
        sockets::tests(),
        swap::tests(),
        sweep::tests(),
        swaps_and_drains::tests(),
        totals::tests(),
        #[cfg(target_os = "linux")]
        upgrade::tests(),
        watch::tests(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn main() {
    libtest_mimic::run(&support::harness::arguments(), all()).exit();
}
