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
//! The waker also says *which* client woke: the poll stamps each armed
//! connection with its place in the list ([`InList`]), and the wake-up
//! leaves that place in the poll's [`Woken`] list. So a poll woken while
//! it waits looks again only at the clients that woke (and at what it
//! cannot arm: writers, listeners), not at all thousand: that look is on
//! the path of every message that wakes the guest.
//!
//! Arming belongs to one *round*, a number no other poll uses: a poll
//! from another task (or another instance) starts a round of its own, so
//! a waker left for a task that is gone is never relied on. Anything else
//! that asks the runtime about the connection's readability (and so
//! replaces the waker it holds) disarms it first.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// A number no round has used (0 means "not armed").
pub fn new_round() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, SeqCst)
}

/// Where a connection sits in a poll's list: which call of `poll` (a
/// number each call takes afresh) and its index there, in one word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InList(u64);

impl InList {
    pub fn new(call: u32, index: u32) -> InList {
        InList((u64::from(call) << 32) | u64::from(index))
    }

    pub fn call(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn index(self) -> u32 {
        self.0 as u32
    }
}

/// The places whose connections woke, for the poll that armed them: at
/// most one per armed connection, since a wake-up disarms.
#[derive(Default)]
pub struct Woken(Mutex<Vec<InList>>);

impl Woken {
    /// Forgets every place (a new call of `poll` begins).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Moves the indices that woke in `call` into `into`. False if a
    /// place from another call was among them: a connection the guest
    /// left out of this list, or (on a runtime with several threads) one
    /// whose wake-up raced with this call's stamp and read the place it
    /// had; the caller then looks at the whole list, which is always right.
    pub fn take(&self, call: u32, into: &mut Vec<u32>) -> bool {
        let mut places = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut all_this_call = true;
        for place in places.drain(..) {
            match place.call() == call {
                true => into.push(place.index()),
                false => all_this_call = false,
            }
        }
        all_this_call
    }

    fn push(&self, place: InList) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(place);
    }
}

#[derive(Default)]
pub struct ReadWake {
    /// The round in which the connection was found not readable, with
    /// this waker left in the runtime; 0 once anything may have changed.
    armed: AtomicU64,
    /// Its place in the list of the poll that looked last.
    place: AtomicU64,
    /// The task that polled, to wake when the runtime wakes this, and
    /// where it hears which connection woke.
    poller: Mutex<Option<(Waker, Arc<Woken>)>>,
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

    /// Notes the connection's place in this poll's list, before the poll
    /// looks whether it is armed, so that a wake-up after this says this
    /// place; returns the place it had, to tell a connection twice in one
    /// list. Plain loads and stores, not a locked swap (a poll stamps
    /// every client it lists): only the polling task writes the place,
    /// and a wake-up that reads the one before is caught by [`Woken::take`].
    pub fn stamp(&self, place: InList) -> InList {
        let had = self.place.load(Relaxed);
        self.place.store(place.0, Relaxed);
        InList(had)
    }

    /// Armed for `round` before the runtime is asked (so that an event
    /// arriving meanwhile disarms it), `task` to be woken, `woken` told.
    pub fn arm(&self, round: u64, task: &Waker, woken: &Arc<Woken>) {
        self.armed.store(round, SeqCst);
        let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        let same = poller.as_ref().is_some_and(|(t, w)| t.will_wake(task) && Arc::ptr_eq(w, woken));
        if !same {
            *poller = Some((task.clone(), Arc::clone(woken)));
        }
    }

    pub fn disarm(&self) {
        self.armed.store(0, SeqCst);
    }

    /// Something happened (an event, or the host shut the reading side):
    /// the next poll asks again, the poll that armed it hears its place,
    /// and the task that polled looks.
    pub fn wake_task(&self) {
        let was_armed = self.armed.swap(0, SeqCst) != 0;
        if let Some((task, woken)) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            if was_armed {
                woken.push(InList(self.place.load(Relaxed)));
            }
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

    fn taken(woken: &Woken, call: u32) -> Vec<u32> {
        let mut indices = Vec::new();
        assert!(woken.take(call, &mut indices), "a place from another call");
        indices
    }

    #[test]
    fn an_event_disarms_and_wakes_the_task_that_polled() {
        let (wake, waker) = ReadWake::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(Arc::clone(&count));
        let round = new_round();
        let woken = Arc::new(Woken::default());
        assert!(!wake.is_armed(round), "a new connection is asked");
        wake.stamp(InList::new(7, 3));
        wake.arm(round, &task, &woken);
        assert!(wake.is_armed(round));
        assert!(!wake.is_armed(new_round()), "armed in one round only");
        waker.wake_by_ref();
        assert!(!wake.is_armed(round), "an event disarms");
        assert_eq!(count.0.load(SeqCst), 1, "and wakes the task");
        assert_eq!(taken(&woken, 7), [3], "and tells the poll its place");
    }

    #[test]
    fn a_wake_up_tells_its_place_once_and_only_to_its_call() {
        let (wake, waker) = ReadWake::new();
        let task = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let (round, woken) = (new_round(), Arc::new(Woken::default()));
        wake.stamp(InList::new(1, 5));
        wake.arm(round, &task, &woken);
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(taken(&woken, 1), [5], "a second wake-up finds it disarmed");
        assert_eq!(taken(&woken, 1), Vec::<u32>::new(), "taken once");

        // Stamped for call 2 after call 1's place was taken: a wake-up
        // now says call 2's place, and call 1, looking, is told to look
        // at its whole list.
        wake.stamp(InList::new(1, 5));
        wake.arm(round, &task, &woken);
        assert_eq!(wake.stamp(InList::new(2, 9)), InList::new(1, 5), "the place it had");
        waker.wake_by_ref();
        let mut indices = Vec::new();
        assert!(!woken.take(1, &mut indices), "another call's place");
        assert_eq!(indices, Vec::<u32>::new());
        wake.stamp(InList::new(3, 0));
        wake.arm(round, &task, &woken);
        waker.wake_by_ref();
        woken.clear();
        assert_eq!(taken(&woken, 3), Vec::<u32>::new(), "cleared for a new call");
    }

    #[test]
    fn rounds_never_repeat() {
        let (a, b) = (new_round(), new_round());
        assert!(a != 0 && b != 0 && a != b);
    }
}
