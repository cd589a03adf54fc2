//! The tests' own runner, on libtest-mimic (the same command line as
//! `cargo test`'s: filters, `--ignored`, `--include-ignored`, ...), for two
//! things libtest cannot do:
//!
//! - **A time limit for every test.** Each runs on a thread of its own; one
//!   that has not finished after [`TIME_LIMIT`] fails, saying what it was
//!   waiting for (the helpers in `support` say, see [`waiting_for`]), and
//!   the run goes on. (Every host a test starts dies with the test
//!   process, so nothing it left behind outlives the run.)
//! - **Needs.** A test that needs something this machine may lack (IPv6 on
//!   loopback, a tool) declares it. If it is missing, the test is shown as
//!   ignored with what it needs, and counted in the summary; run anyway
//!   (`--include-ignored`), it fails, saying so: a skipped test never
//!   passes. With `REQUIRE_TOOLCHAINS=1` (exactly), a missing need is a
//!   failure from the start, as in CI.
//!
//! It also runs twice as many tests at once as the machine has cores
//! ([`arguments`]): a test mostly waits (for a host to start, a client's
//! bytes, a child process), so one per core leaves the cores idle.

use libtest_mimic::{Failed, Trial};
use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// The longest any test may take. Each wait inside a test has its own,
/// shorter, limit (`PATIENCE`); this one catches what no wait covers.
pub const TIME_LIMIT: Duration = Duration::from_secs(240);

/// Something a test needs: `Err` says what is missing.
pub type Need = Result<(), String>;

/// What each running test waits for now, by its thread's name.
static WAITING: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// Notes what the calling test waits for now, for the message if it runs
/// out of time. (A thread a test spawns itself notes nothing.)
pub fn waiting_for(what: impl FnOnce() -> String) {
    let thread = std::thread::current();
    let Some(test) = thread.name() else { return };
    let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    waiting.get_or_insert_with(HashMap::new).insert(test.to_string(), what());
}

/// The command line, as libtest's; with neither `--test-threads` nor
/// RUST_TEST_THREADS, twice as many tests at once as there are cores. (On
/// this 2-core machine: the integration tests in 46 s instead of 70, the
/// toolchains tests in 77 s instead of 111; both pass with both cores kept
/// busy by other work.)
pub fn arguments() -> libtest_mimic::Arguments {
    let mut args = libtest_mimic::Arguments::from_args();
    let told = std::env::var("RUST_TEST_THREADS").ok().and_then(|n| n.parse().ok());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    args.test_threads = args.test_threads.or(told).or(Some(2 * cores));
    args
}

/// Whether missing needs fail the run (CI) rather than skip tests.
pub fn needs_required() -> bool {
    std::env::var("REQUIRE_TOOLCHAINS").as_deref() == Ok("1")
}

/// A test named `name` that runs `body` under the time limit, or is
/// skipped (ignored, with what it needs) if one of `needs` is missing.
pub fn trial(name: &str, needs: Vec<Need>, body: impl FnOnce() + Send + 'static) -> Trial {
    let missing: Vec<String> = needs.into_iter().filter_map(Result::err).collect();
    if missing.is_empty() {
        let name_ = name.to_string();
        return Trial::test(name, move || run_within(name_, TIME_LIMIT, body));
    }
    let why = format!("needs {}", missing.join(", "));
    if needs_required() {
        return Trial::test(name, move || Err(format!("{why}, which is missing").into()));
    }
    let skipped = format!("skipped: {why}");
    Trial::test(name, move || Err(skipped.into())).with_ignored_flag(true).with_kind(why)
}

/// Runs `body` on a thread named `name`: its outcome, or a failure once
/// `limit` has passed.
pub fn run_within(
    name: String,
    limit: Duration,
    body: impl FnOnce() + Send + 'static,
) -> Result<(), Failed> {
    let (done, finished) = mpsc::channel();
    let test = std::thread::Builder::new().name(name.clone()).spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = done.send(outcome.map_err(|panic| panic_message(&*panic)));
    });
    test.map_err(|e| format!("starting the test's thread: {e}"))?;
    let outcome = match finished.recv_timeout(limit) {
        Ok(outcome) => outcome.map_err(Failed::from),
        Err(_) => {
            let waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
            let what = waiting.as_ref().and_then(|w| w.get(&name)).cloned();
            let what = what.unwrap_or_else(|| "nothing it said".to_string());
            Err(format!("still running after {limit:?}; it was waiting for {what}").into())
        }
    };
    if let Some(waiting) = WAITING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        waiting.remove(&name);
    }
    outcome
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
        (Some(message), _) => message.clone(),
        (None, Some(message)) => message.to_string(),
        (None, None) => "the test panicked".to_string(),
    }
}

/// Registers tests, one `fn` each (`cfg` attributes and needs allowed):
///
/// ```ignore
/// tests![a_test, #[cfg(target_os = "linux")] another [needs need::ipv6()]]
/// ```
///
/// Each is named `module::function`, as libtest names them.
#[macro_export]
macro_rules! tests {
    ($($(#[$attr:meta])* $name:ident $([needs $($need:expr),+])?),* $(,)?) => {{
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        #[allow(unused_mut)]
        let mut trials = Vec::new();
        $(
            $(#[$attr])*
            trials.push($crate::support::harness::trial(
                &format!("{module}::{}", stringify!($name)),
                vec![$($($need),+)?],
                $name,
            ));
        )*
        trials
    }};
}
