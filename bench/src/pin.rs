//! One core for the servers under test, the others for the load: on this
//! two-core machine the load generator and the server would otherwise take
//! turns on both, and a server's latency would be the generator's too.
//! The benchmark pins itself (and so every thread it starts) to the last
//! core, and each server it starts to the first. `--no-pin` leaves both
//! to the scheduler.

use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The generator's core, once pinning is on (0: off). Counted once, before
/// pinning: afterwards `available_parallelism` counts only the pinned core.
static LAST_CORE: AtomicUsize = AtomicUsize::new(0);

/// Pins from now on, if the machine has two cores or more.
pub fn enable() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    LAST_CORE.store(cores - 1, Ordering::Relaxed);
    generator()
}

/// This thread (and the threads it starts) on the last core; whether it is
/// pinned there (then it has the core to itself).
pub fn generator() -> bool {
    let last = LAST_CORE.load(Ordering::Relaxed);
    if last > 0 {
        set(last..last + 1);
    }
    last > 0
}

/// A server to start, on the first core.
pub fn server(command: &mut std::process::Command) {
    if LAST_CORE.load(Ordering::Relaxed) > 0 {
        // SAFETY: sched_setaffinity is async-signal-safe, and only sets the
        // child's own affinity between fork and exec.
        unsafe {
            command.pre_exec(|| {
                set(0..1);
                Ok(())
            });
        }
    }
}

fn set(cores: std::ops::Range<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
