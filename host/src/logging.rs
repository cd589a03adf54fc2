//! The host's log, on stderr: plain lines, or one JSON object per line;
//! `RUST_LOG` picks the detail (default `info`).
//!
//! Written by a thread of its own through a queue bounded in bytes
//! (`output.rs`), so that a slow reader never stalls serving; what is
//! dropped under pressure is counted, and said in the log once it has room
//! again. Under systemd (stderr connected to the journal, as
//! `JOURNAL_STREAM` says), each line starts with its syslog priority (`<4>`
//! for a warning), so that `journalctl -p warning` finds the warnings. In
//! text, every message is escaped (`escape.rs`) whoever built it: no raw
//! CR, LF or ESC reaches stderr, and no message is longer than
//! [`MAX_MESSAGE`] bytes.

use crate::escape;
use crate::output::{self, Queue};
use crate::settings::LogFormat;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tracing::{Level, Metadata};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the writers' threads until the host exits; dropping it flushes
/// what is still queued.
pub struct Guards(#[allow(dead_code)] Vec<WorkerGuard>);

/// The longest message a log line shows (the host's own; a guest's line
/// is cut at 4 KiB, `guest_output.rs`).
pub const MAX_MESSAGE: usize = 16 << 10;

/// Installs the log (and the guests' stdout). Call once, early.
pub fn init(format: LogFormat) -> Guards {
    let (log, log_guard) = Queue::new(std::io::stderr(), "log-writer");
    let (stdout, stdout_guard) = Queue::new(std::io::stdout(), "stdout-writer");
    let json = matches!(format, LogFormat::Json);
    output::install(&log, stdout, json, is_the_journal(1));
    let writer = Prioritised { inner: log.clone(), journal: is_the_journal(2) };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false);
    let report = DroppedReport {
        log,
        json,
        journal: is_the_journal(2),
        reported: AtomicU64::new(0),
        at: Mutex::new(None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(report);
    match format {
        // The message says it all; the structured fields (event, addr, ...)
        // are for machines, so plain text leaves them out.
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()).fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(
                    |writer, field, value| match field.name() {
                        // `client`: the span of a --per-client instance.
                        "message" | "client" => {
                            let text = format!("{value:?}");
                            writer.write_str(&escape::escape_capped(&text, MAX_MESSAGE))
                        }
                        _ => Ok(()),
                    },
                ),
            ))
            .init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
    Guards(vec![log_guard, stdout_guard])
}

/// systemd connects a service's stderr (and its stdout, the same stream)
/// to the journal and says so in JOURNAL_STREAM (`DEVICE:INODE` of that
/// stream); a redirected one is not the journal even if the variable was
/// inherited. (Windows has no journal.)
#[cfg(windows)]
fn is_the_journal(_fd: i32) -> bool {
    false
}

#[cfg(unix)]
fn is_the_journal(fd: i32) -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` for descriptor `fd`, or fails.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // (Their types differ by system: u64 on Linux, i32 and u64 on macOS.)
    #[allow(clippy::unnecessary_cast)]
    let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
    device.parse() == Ok(dev) && inode.parse() == Ok(ino)
}

/// The log's writer: each line whole, with the journal's priority prefix
/// when stderr is the journal.
#[derive(Clone)]
struct Prioritised {
    inner: Queue,
    journal: bool,
}

impl<'a> MakeWriter<'a> for Prioritised {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { inner: self.inner.clone(), prefix: None }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        let prefix = self.journal.then(|| priority(*meta.level()));
        Line { inner: self.inner.clone(), prefix }
    }
}

/// syslog's priorities, as sd-daemon(3) prefixes them.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// One formatted line (the formatter writes it in one go), prefixed.
struct Line {
    inner: Queue,
    prefix: Option<&'static str>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.prefix.take() {
            Some(prefix) => self.inner.send(&[prefix.as_bytes(), buf].concat()),
            None => self.inner.send(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// After lines were dropped, the next line that goes out is preceded by
/// one saying how many (at most one such line a second).
struct DroppedReport {
    log: Queue,
    json: bool,
    /// stderr is the journal: the line carries a warning's priority.
    journal: bool,
    reported: AtomicU64,
    at: Mutex<Option<Instant>>,
}

impl<S: tracing::Subscriber> Layer<S> for DroppedReport {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let dropped = output::dropped_lines();
        let reported = self.reported.load(Ordering::Relaxed);
        if dropped <= reported {
            return;
        }
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *at = Some(Instant::now());
        self.reported.store(dropped, Ordering::Relaxed);
        let message = format!(
            "{} log lines were dropped: the log's reader did not keep up (the host's serving \
             never waits for it)",
            dropped - reported
        );
        let line =
            match self.json {
                false if self.journal => format!("<4>WARN {message}\n"),
                false => format!("WARN {message}\n"),
                true => serde_json::json!({
                    "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                    "level": "WARN",
                    "message": message,
                    "event": "dropped",
                    "count": dropped - reported,
                })
                .to_string()
                    + "\n",
            };
        self.log.send(line.as_bytes());
    }
}
