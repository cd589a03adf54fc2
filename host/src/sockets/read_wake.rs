//! What the last `poll` learnt about a connection's readability, so that
//! the next one need not ask the async runtime again.
//!
//! A guest serving a thousand clients passes every one of them to each
//! `poll`, and most have nothing to read. Asking tokio about each one (its
//! readiness, then a lock to leave the waker there) was a third of the
//! host's CPU at 1 000 connections (`perf record`, docs/performance.md).
//! So a connection found not readable is *armed*: the runtime holds the
//! connection's own waker, which disarms it when an event comes and wakes
//! the task that polled. Until then, the next poll answers "not ready"
//! from one atomic load: a poll costs the clients that had an event, not
//! all of them.
//!
//! Arming belongs to one *round*, a number no other poll uses: a poll
//! from another task (or another instance) starts a round of its own, so
//! a waker left for a task that is gone is never relied on. Anything else
//! that asks the runtime about the connection's readability (and so
//! replaces the waker it holds) disarms it first.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// A number no round has used (0 means "not armed").
pub fn new_round() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, SeqCst)
}

#[derive(Default)]
pub struct ReadWake {
    /// The round in which the connection was found not readable, with
    /// this waker left in the runtime; 0 once anything may have changed.
    armed: AtomicU64,
    /// The task that polled, to wake when the runtime wakes this.
    task: Mutex<Option<Waker>>,
}

impl ReadWake {
    /// The waker to leave with the runtime.
    pub fn new() -> (Arc<ReadWake>, Waker) {
        let wake = Arc::new(ReadWake::default());
        let waker = Waker::from(Arc::clone(&wake));
        (wake, waker)
    }

    /// Found not readable in `round`, and nothing has happened since.
    pub fn is_armed(&self, round: u64) -> bool {
        self.armed.load(SeqCst) == round
    }

    /// Armed for `round` before the runtime is asked (so that an event
    /// arriving meanwhile disarms it), `task` to be woken.
    pub fn arm(&self, round: u64, task: &Waker) {
        self.armed.store(round, SeqCst);
        let mut current = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !current.as_ref().is_some_and(|t| t.will_wake(task)) {
            *current = Some(task.clone());
        }
    }

    pub fn disarm(&self) {
        self.armed.store(0, SeqCst);
    }

    /// Something happened (an event, or the host shut the reading side):
    /// the next poll asks again, and the task that polled looks.
    pub fn wake_task(&self) {
        self.disarm();
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_task();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_task();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn an_event_disarms_and_wakes_the_task_that_polled() {
        let (wake, waker) = ReadWake::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(Arc::clone(&count));
        let round = new_round();
        assert!(!wake.is_armed(round), "a new connection is asked");
        wake.arm(round, &task);
        assert!(wake.is_armed(round));
        assert!(!wake.is_armed(new_round()), "armed in one round only");
        waker.wake_by_ref();
        assert!(!wake.is_armed(round), "an event disarms");
        assert_eq!(count.0.load(SeqCst), 1, "and wakes the task");
    }

    #[test]
    fn rounds_never_repeat() {
        let (a, b) = (new_round(), new_round());
        assert!(a != 0 && b != 0 && a != b);
    }
}
