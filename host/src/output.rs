//! The host's two outputs, its log (stderr) and its guests' stdout (the
//! host's stdout), each written by a thread of its own through a queue
//! bounded in bytes: a slow reader (a full pipe, a stalled journal) never
//! blocks the thread that serves the guests, and never makes the host
//! hold more than [`QUEUED_BYTES`] for it. What does not fit is dropped
//! and counted: in the metrics, and in a line of the log when it has room
//! again (`logging.rs` installs the writers; this module is where the rest
//! of the host finds them).

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// The most each queue holds, counting every line as its length plus
/// [`LINE_COST`] (the allocation and the queue's slot).
use crate::ledger::QUEUED_BYTES;
/// What a line costs the queue beyond its bytes.
const LINE_COST: usize = 128;
/// The queue's slots: as many lines as [`QUEUED_BYTES`] can pay for, so
/// that the byte bound is always the one that bites.
const QUEUED_LINES: usize = QUEUED_BYTES / LINE_COST;

/// A queue to a writer thread, bounded in bytes.
#[derive(Clone)]
pub struct Queue {
    sender: NonBlocking,
    /// Bytes in the queue now (as [`cost`] counts them).
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

/// What one line of `len` bytes costs the queue.
fn cost(len: usize) -> usize {
    len.saturating_add(LINE_COST)
}

impl Queue {
    /// A queue to `to`, written by a thread named `thread`.
    pub fn new(to: impl Write + Send + 'static, thread: &str) -> (Queue, WorkerGuard) {
        let queued = Arc::new(AtomicUsize::new(0));
        let drain = Drain { inner: to, queued: Arc::clone(&queued) };
        let (sender, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name(thread)
            .finish(drain);
        (Queue { sender, queued, dropped: Arc::default() }, guard)
    }

    /// Queues one whole line; drops it (and counts it) if it does not fit.
    pub fn send(&self, line: &[u8]) {
        let cost = cost(line.len());
        let before = self.queued.fetch_add(cost, Relaxed);
        if before.saturating_add(cost) > QUEUED_BYTES {
            self.queued.fetch_sub(cost, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let _ = self.sender.clone().write_all(line);
    }

    /// Lines dropped so far (by the byte bound, or by the queue itself).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed) + self.sender.error_counter().dropped_lines() as u64
    }

    /// Bytes queued now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }
}

/// The writer thread's end: a line leaves the queue's count once written
/// (or once writing it failed: it is gone either way).
struct Drain<W> {
    inner: W,
    queued: Arc<AtomicUsize>,
}

impl<W: Write> Write for Drain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    /// The writer thread writes each queued line with one call of this.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let result = self.inner.write_all(buf);
        self.queued.fetch_sub(cost(buf.len()), Relaxed);
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The guests' stdout, and how to write a line there.
struct Stdout {
    queue: Queue,
    json: bool,
    /// stdout is the journal (systemd): each line gets the priority
    /// `<6>` (info), so that a guest's line that starts with `<0>` reads
    /// as text, never as a priority of its own.
    journal: bool,
}

static STDOUT: OnceLock<Stdout> = OnceLock::new();
static QUEUES: OnceLock<Vec<Queue>> = OnceLock::new();

/// Called once, by `logging::init`, with both queues (the log's first).
pub fn install(log: &Queue, stdout: Queue, json: bool, journal: bool) {
    let _ = QUEUES.set(vec![log.clone(), stdout.clone()]);
    let _ = STDOUT.set(Stdout { queue: stdout, json, journal });
}

/// Lines dropped so far, in both outputs.
pub fn dropped_lines() -> u64 {
    QUEUES.get().map_or(0, |queues| queues.iter().map(Queue::dropped).sum())
}

/// One line a guest instance wrote to its stdout (escaped already,
/// `guest_output.rs`): as it is, or with `--log-format json` as a JSON
/// object marked as the guest's.
pub fn guest_stdout(instance: u64, line: &str) {
    let Some(stdout) = STDOUT.get() else {
        return println!("{line}");
    };
    let text = match stdout.json {
        false => format!("{line}\n"),
        true => {
            let object = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "level": "INFO",
                "message": line,
                "event": "guest-stdout",
                "instance": instance,
            });
            format!("{object}\n")
        }
    };
    let text = if stdout.journal { format!("<6>{text}") } else { text };
    stdout.queue.send(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A writer that waits for the test's word before each write: a
    /// reader that has stalled.
    struct Stalled(mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines that grow after the cut (escaped control characters) or many
    /// small ones: the queue holds at most QUEUED_BYTES, whatever they are.
    #[test]
    fn a_stalled_reader_makes_the_queue_drop_at_its_byte_bound() {
        let (go, wait) = mpsc::channel();
        let (queue, guard) = Queue::new(Stalled(wait), "test-writer");
        let line = vec![b'x'; 24 << 10];
        let sent = 1000;
        for _ in 0..sent {
            queue.send(&line);
        }
        assert!(queue.queued() <= QUEUED_BYTES, "{} bytes queued", queue.queued());
        let kept = sent - queue.dropped() as usize;
        // The writer thread may have taken one line off the queue already.
        assert!(kept <= QUEUED_BYTES / cost(line.len()) + 1, "{kept} lines kept");
        for _ in 0..=sent {
            let _ = go.send(());
        }
        drop(guard);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while queue.queued() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(queue.queued(), 0, "every line written leaves the count");
    }
}
