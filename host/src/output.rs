//! The host's two outputs, its log (stderr) and its guests' stdout (the
//! host's stdout), each written by a thread of its own through a bounded
//! queue: a slow reader (a full pipe, a stalled journal) never blocks the
//! thread that serves the guests. What does not fit is dropped and
//! counted: in the metrics, and in a line of the log when it has room
//! again (`logging.rs` installs the writers; this module is where the
//! rest of the host finds them).

use std::sync::OnceLock;
use std::time::SystemTime;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking};

/// Lines each queue holds before it drops: a burst of this many costs at
/// most a few MiB of the host's memory.
pub const QUEUED_LINES: usize = 16 * 1024;

/// The guests' stdout, and how to write a line there.
struct Stdout {
    writer: NonBlocking,
    json: bool,
}

static STDOUT: OnceLock<Stdout> = OnceLock::new();
static DROPPED: OnceLock<Vec<ErrorCounter>> = OnceLock::new();

/// Called once, by `logging::init`.
pub fn install(stdout: NonBlocking, json: bool, counters: Vec<ErrorCounter>) {
    let _ = DROPPED.set(counters);
    let _ = STDOUT.set(Stdout { writer: stdout, json });
}

/// Lines dropped so far, in both outputs.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counters| counters.iter().map(|c| c.dropped_lines() as u64).sum())
}

/// One line a guest instance wrote to its stdout: as it is, or with
/// `--log-format json` as a JSON object marked as the guest's.
pub fn guest_stdout(instance: u64, line: &str) {
    use std::io::Write;
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
    let _ = stdout.writer.clone().write_all(text.as_bytes());
}
