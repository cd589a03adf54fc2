//! The CPU time a guest instance causes, for `--cpu-budget` and the
//! `guest_cpu_seconds` metric: its own code and the host calls it makes
//! (a host call runs on the same thread, inside the same poll), measured
//! as the thread's CPU time around each run of the instance, a poll of its
//! future. Time spent waiting (for the network, a timer) is no run, and
//! costs nothing; a guest that wakes for 50 µs is charged 50 µs.
//!
//! What the host does for an instance on other threads (a send it
//! finishes in the background, a file read on a blocking thread) is not
//! charged: each is bounded on its own (`docs/security.md`'s ledger).

use crate::metrics::METRICS;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The calling thread's CPU time so far (user and system).
#[cfg(unix)]
pub fn thread_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `now`.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The calling thread's CPU time so far (kernel and user), from
/// GetThreadTimes, in 100 ns units.
#[cfg(windows)]
pub fn thread_time() -> Duration {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentThread, GetThreadTimes};
    let zero = || FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
    let (mut created, mut exited, mut kernel, mut user) = (zero(), zero(), zero(), zero());
    // SAFETY: GetThreadTimes writes four FILETIMEs for the current thread
    // (a pseudo-handle that needs no closing).
    let ok = unsafe {
        GetThreadTimes(GetCurrentThread(), &mut created, &mut exited, &mut kernel, &mut user)
    };
    if ok == 0 {
        return Duration::ZERO;
    }
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Duration::from_nanos((ticks(kernel) + ticks(user)) * 100)
}

/// `--cpu-budget` was spent.
#[derive(Debug)]
pub struct BudgetSpent(pub Duration);

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CPU budget of {:?} used up", self.0)
    }
}

impl std::error::Error for BudgetSpent {}

/// A guest instance's future, charged for each poll. Once the charge
/// passes the budget, the next time the instance yields (an epoch tick
/// makes compiled code yield every 10 ms; a host call returns) it ends
/// with [`BudgetSpent`], and dropping the inner future stops the guest.
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    used: Duration,
    budget: Option<Duration>,
}

impl<F> Metered<F> {
    pub fn new(inner: F, budget: Option<Duration>) -> Self {
        Metered { inner: Box::pin(inner), used: Duration::ZERO, budget }
    }
}

impl<F, T> Future for Metered<F>
where
    F: Future<Output = wasmtime::Result<T>>,
{
    type Output = wasmtime::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = thread_time();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_time().saturating_sub(started);
        self.used += spent;
        METRICS.guest_cpu_seconds.inc_by(spent.as_secs_f64());
        match (polled, self.budget) {
            (Poll::Pending, Some(budget)) if self.used > budget => {
                Poll::Ready(Err(wasmtime::Error::new(BudgetSpent(budget))))
            }
            (polled, _) => polled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_time_counts_work_not_waiting() {
        let before = thread_time();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_time() - before;
        let before = thread_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let worked = thread_time() - before;
        assert!(slept < Duration::from_millis(10), "sleeping cost {slept:?}");
        assert!(worked > slept, "working cost {worked:?}, sleeping {slept:?}");
    }
}
