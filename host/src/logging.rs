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
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    let writer = Prioritised { inner: log.clone(), journal: stderr_is_the_journal() };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false);
    let report = DroppedReport {
        log,
        json,
        journal: stderr_is_the_journal(),
        reported: AtomicU64::new(0),
        at: Mutex::new(None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(report);
    match format {
        LogFormat::Text => {
            registry.with(fmt.event_format(Text { ansi: std::io::stderr().is_terminal() })).init()
        }
        LogFormat::Json => registry.with(fmt.event_format(Json)).init(),
    }
    Guards(vec![log_guard, stdout_guard])
}

tokio::task_local! {
    /// The instance the current task runs, with `--per-client`: "#3
    /// 127.0.0.1:50312". Every line logged while it runs is marked with it
    /// (`instance{#3 127.0.0.1:50312}: ...`; in JSON, `"client":"..."`).
    /// A task-local rather than a tracing span: a span's storage is pooled
    /// and kept, so a burst of a thousand clients would leave a thousand
    /// spans' worth of memory behind for good.
    pub static INSTANCE: String;
}

/// The current task's instance, if it runs one (`INSTANCE`).
fn instance() -> Option<String> {
    INSTANCE.try_with(String::clone).ok()
}

/// The text log's lines: `TIMESTAMP LEVEL [instance{...}: ]MESSAGE`, the
/// message escaped (`escape.rs`); the structured fields are for machines,
/// so plain text leaves them out.
struct Text {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        let level = *event.metadata().level();
        let (on, off) = match (self.ansi, level) {
            (false, _) => ("", ""),
            (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[34m", "\x1b[0m"),
        };
        write!(writer, "{now} {on}{level:>5}{off} ")?;
        if let Some(instance) = instance() {
            write!(writer, "instance{{{}}}: ", escape::escape_capped(&instance, 256))?;
        }
        let mut message = Message::default();
        event.record(&mut message);
        writeln!(writer, "{}", escape::escape_capped(&message.0, MAX_MESSAGE))
    }
}

/// An event's message.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The JSON log's lines: one object each, with `timestamp`, `level`, the
/// event's fields (`message`, `event`, ...) and, in an instance's task
/// (`--per-client`), `client`: the instance and its client.
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        fields.0.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(SystemTime::now()).to_string().into(),
        );
        fields.0.insert("level".into(), event.metadata().level().to_string().into());
        event.record(&mut fields);
        if let Some(instance) = instance() {
            fields.0.insert("client".into(), instance.into());
        }
        let line = serde_json::Value::Object(fields.0);
        writeln!(writer, "{line}")
    }
}

/// An event's fields, as JSON values.
#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Whether stderr is the journal: then each line starts with its priority.
pub fn stderr_is_the_journal() -> bool {
    is_the_journal(2)
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
        let line = match self.json {
            false => format!("WARN {message}\n"),
            true => {
                let line = serde_json::json!({
                    "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                    "level": "WARN",
                    "message": message,
                    "event": "dropped",
                    "count": dropped - reported,
                });
                format!("{line}\n")
            }
        };
        let line = match self.journal {
            true => format!("{}{line}", priority(Level::WARN)),
            false => line,
        };
        self.log.send(line.as_bytes());
    }
}
