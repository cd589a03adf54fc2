//! Log lines a guest or a client can cause at will (a denied connect in a
//! loop, a flood of clients) are written at most [`PER_SECOND`] times a
//! second for each kind. The rest are counted, and one line, written when
//! the second is over, says how many were left out:
//!
//! ```text
//! WARN ... and 4512 more denied TCP connects in the last second
//! ```
//!
//! So the log cannot be flooded, and its totals stay exact: the lines
//! written plus the counts in these summaries are every event. In JSON the
//! summary is an event of its own (`"event":"suppressed"`, with `kind`, the
//! kind's snake_case name the metrics use too, and `count`).

pub use crate::metrics::LogLines;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines of one kind written in one second, at most.
pub const PER_SECOND: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of line, with its own allowance. Declare each as a `static`
/// next to the line it limits.
pub struct Kind {
    /// Its name in the metrics and in JSON: `connect_denied`.
    id: LogLines,
    /// Plural, for the summary: "denied TCP connects".
    what: &'static str,
    warn: bool,
    window: Mutex<Window>,
}

/// The kinds with a summary still to write (for [`flush_all`] at exit).
static PENDING: Mutex<Vec<&'static Kind>> = Mutex::new(Vec::new());

impl Kind {
    /// A kind whose lines (and summary) are warnings.
    pub const fn warn(id: LogLines, what: &'static str) -> Kind {
        Kind { id, what, warn: true, window: Mutex::new(Window::new()) }
    }

    /// A kind whose lines (and summary) are informational.
    pub const fn info(id: LogLines, what: &'static str) -> Kind {
        Kind { id, what, warn: false, window: Mutex::new(Window::new()) }
    }

    /// Counts one line of this kind: true if it is to be written now. A
    /// summary of an earlier second is written first, if one is due.
    pub fn admit(&'static self) -> bool {
        let (admitted, ended) = self.lock().admit(Instant::now());
        self.summarise(ended);
        if !admitted {
            self.flush_later();
        }
        admitted
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn summarise(&self, left_out: u64) {
        if left_out == 0 {
            return;
        }
        crate::metrics::suppressed(self.id, left_out);
        let (what, count, kind) = (self.what, left_out, self.id.name());
        match self.warn {
            true => tracing::warn!(
                event = "suppressed",
                kind,
                count,
                "... and {count} more {what} in the last second"
            ),
            false => tracing::info!(
                event = "suppressed",
                kind,
                count,
                "... and {count} more {what} in the last second"
            ),
        }
    }

    /// Makes sure the summary is written when the second is over, even if
    /// no other line of this kind comes: a timer task, only while lines
    /// are being left out (an idle host has none).
    fn flush_later(&'static self) {
        let mut window = self.lock();
        if window.flush_pending {
            return;
        }
        window.flush_pending = true;
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.iter().any(|kind| std::ptr::eq(*kind, self)) {
            pending.push(self);
        }
        drop(pending);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.flush_when_due());
        }
    }

    async fn flush_when_due(&'static self) {
        loop {
            let due = self.lock().due();
            let Some(due) = due else { break };
            tokio::time::sleep_until(due.into()).await;
            let ended = self.lock().end_if_over(Instant::now());
            self.summarise(ended);
        }
    }

    fn flush_now(&self) {
        let ended = self.lock().close();
        self.summarise(ended);
    }
}

/// Writes every summary still due: at exit, so that no count is lost.
pub fn flush_all() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    for kind in pending {
        kind.flush_now();
    }
}

/// One kind's current second.
struct Window {
    began: Option<Instant>,
    written: u32,
    left_out: u64,
    /// A timer will write the summary when the second is over.
    flush_pending: bool,
}

impl Window {
    const fn new() -> Window {
        Window { began: None, written: 0, left_out: 0, flush_pending: false }
    }

    /// Counts one line at `now`: whether to write it, and how many were
    /// left out of a second that has ended (to summarise first).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let ended = self.end_if_over(now);
        self.began.get_or_insert(now);
        if self.written < PER_SECOND {
            self.written += 1;
            return (true, ended);
        }
        self.left_out += 1;
        (false, ended)
    }

    /// Ends the second if it is over: how many lines it left out.
    fn end_if_over(&mut self, now: Instant) -> u64 {
        match self.began {
            Some(began) if now.duration_since(began) >= WINDOW => self.close(),
            _ => 0,
        }
    }

    fn close(&mut self) -> u64 {
        let left_out = std::mem::take(&mut self.left_out);
        (self.began, self.written) = (None, 0);
        left_out
    }

    /// When the pending summary is due; None (and nothing pending from
    /// now on) when there is none.
    fn due(&mut self) -> Option<Instant> {
        match (self.began, self.left_out) {
            (Some(began), 1..) => Some(began + WINDOW),
            _ => {
                self.flush_pending = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_a_second_then_a_count_of_the_rest() {
        let start = Instant::now();
        let mut window = Window::new();
        let at = |ms| start + Duration::from_millis(ms);
        let written = (0..1000).filter(|i| window.admit(at(*i)).0).count();
        assert_eq!(written, PER_SECOND as usize);
        assert_eq!(window.due(), Some(at(0) + WINDOW));
        // The first line of the next second brings the summary of this one.
        assert_eq!(window.admit(at(1000)), (true, 990));
        assert_eq!(window.admit(at(1001)).1, 0, "the count is given once");
        assert_eq!(window.due(), None, "nothing left out in this second yet");
        assert!(!window.flush_pending);
    }

    #[test]
    fn a_second_ends_on_its_own_when_nothing_else_comes() {
        let start = Instant::now();
        let mut window = Window::new();
        for _ in 0..15 {
            window.admit(start);
        }
        assert_eq!(window.end_if_over(start + Duration::from_millis(999)), 0);
        assert_eq!(window.end_if_over(start + WINDOW), 5);
        assert_eq!(window.admit(start + WINDOW), (true, 0));
    }
}
