//! The epoch ticker: a thread that advances the engine's epoch every
//! [`EPOCH_TICK`], so that compiled guest code which spins in a loop
//! yields (and can be stopped) that often. It has to be a thread: while a
//! guest spins, the async runtime cannot run.
//!
//! While the async runtime is parked (waiting for the network, a signal or
//! a timer), no guest code is running and there is nothing to interrupt,
//! so the ticker sleeps too, and an idle server does not wake up for it.
//! The runtime reports parking and waking through [`runtime_parks`] and
//! [`runtime_wakes`], installed as its `on_thread_park` and
//! `on_thread_unpark` hooks.

use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::Engine;

/// How often compiled guest code checks in with the host. A guest that
/// spins in a loop yields this often, so a stop request is seen quickly;
/// it is also the unit of `--cpu-budget`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

static RUNTIME_PARKED: AtomicBool = AtomicBool::new(false);
static TICKER: Mutex<Option<Thread>> = Mutex::new(None);

/// The async runtime's thread is about to wait.
pub fn runtime_parks() {
    RUNTIME_PARKED.store(true, SeqCst);
}

/// The async runtime's thread is running again: so must the ticker. An
/// unpark that comes before the ticker's park is kept (`Thread::unpark`),
/// so a wake-up between its check and its park is not lost; unparking a
/// ticker that is not parked costs one atomic swap.
pub fn runtime_wakes() {
    RUNTIME_PARKED.store(false, SeqCst);
    wake_ticker();
}

fn wake_ticker() {
    if let Some(ticker) = TICKER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        ticker.unpark();
    }
}

/// Ticks until dropped. One at a time: the park hooks wake the latest.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Thread,
    /// To wait for it to end (and let its engine go): `stop_and_join`.
    handle: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, stopped) = (engine.clone(), Arc::clone(&stop));
        let ticker = std::thread::Builder::new().name("epoch-ticker".into());
        let thread = ticker.spawn(move || {
            while !stopped.load(SeqCst) {
                if RUNTIME_PARKED.load(SeqCst) {
                    // Until the runtime wakes (or a spurious return: look again).
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
        let handle = thread.context("starting the epoch ticker thread")?;
        let thread = handle.thread().clone();
        *TICKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread.clone());
        Ok(EpochTicker { stop, thread, handle: Some(handle) })
    }

    /// Stops the ticker and waits until its thread has ended, and with it
    /// its hold on the engine. Blocks (for up to a tick).
    pub fn stop_and_join(mut self) {
        self.stop.store(true, SeqCst);
        self.thread.unpark();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}
