//! `wasi-tcp-host` (the `host` package): runs a WASI 0.2 TCP server
//! component, granting it one listen
//! address and nothing else unless told otherwise.
//!
//! ```text
//! cargo run -p host                        # the built-in echo server on 0.0.0.0:9000
//! cargo run -p host -- guest.wasm          # your own component
//! ```

mod audit;
mod cache;
mod cli;
mod cpu;
mod engine;
mod epoch;
mod escape;
mod guest;
mod guest_output;
mod inspect;
mod instance;
mod ledger;
mod limits;
mod log_limit;
mod logging;
mod metrics;
mod notify;
mod observe;
mod off_thread;
mod output;
mod per_client;
mod policy;
mod process_metrics;
mod run;
mod sandbox;
mod settings;
mod signals;
mod sockets;
mod supervise;
mod swap;
mod trace;
mod upgrade;
mod wasi_version;
mod watch;

use clap::Parser;
use settings::LogFormat;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    // Errors the guest can read (say, `to-debug-string` of a connection
    // reset) must not carry the host's own backtrace, whatever RUST_BACKTRACE
    // says: it would leak host paths to the guest, and capturing one on
    // every reset costs time. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let mut args = cli::Args::parse();
    match args.command.take() {
        Some(cli::Command::Inspect { guest, json }) => {
            return match inspect::inspect(&guest, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e, LogFormat::Text),
            }
        }
        Some(cli::Command::Reload { pid }) => {
            return said(notify::reload(pid, Duration::from_secs(600)))
        }
        Some(cli::Command::Upgrade { pid }) => {
            let within = upgrade::READY_WITHIN + Duration::from_secs(10);
            return said(notify::upgrade(pid, within));
        }
        None => {}
    }
    if args.ledger {
        return match args.into_settings(&[]) {
            Ok(settings) => {
                println!("{}", ledger::describe(&settings.terms()));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, LogFormat::Text),
        };
    }
    let format = args.log_format;
    let guards = logging::init(format);
    let result = serve(args);
    log_limit::flush_all();
    let error = match result {
        Ok(code) => return finish(guards, code),
        Err(error) => error,
    };
    match format {
        LogFormat::Json => {
            fail_json(&error);
            finish(guards, ExitCode::FAILURE)
        }
        // After the queued log lines, so that the error is the last line.
        LogFormat::Text => {
            drop(guards);
            fail(error, LogFormat::Text)
        }
    }
}

/// A command's outcome: its line on stdout, or the error.
fn said(outcome: anyhow::Result<String>) -> ExitCode {
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, LogFormat::Text),
    }
}

/// Flushes the log and the guests' stdout, then exits with `code`.
fn finish(guards: logging::Guards, code: ExitCode) -> ExitCode {
    drop(guards);
    code
}

fn serve(args: cli::Args) -> anyhow::Result<ExitCode> {
    // Before any thread starts: this takes variables out of the environment.
    let given = upgrade::Given::take()?;
    settings::raise_open_file_limit();
    let handed_addrs: Vec<_> = given.listeners.iter().map(|h| h.addr).collect();
    let settings = args.into_settings(&handed_addrs)?;
    let runtime = match settings.per_client {
        // Many instances, on every core. The epoch ticker ticks throughout:
        // one thread parking says nothing of the others.
        true => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .max_blocking_threads(ledger::BLOCKING_THREADS)
            .enable_all()
            .build(),
        // One instance at a time runs, on this thread.
        false => tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(ledger::BLOCKING_THREADS)
            .enable_all()
            .on_thread_park(epoch::runtime_parks)
            .on_thread_unpark(epoch::runtime_wakes)
            .build(),
    };
    let runtime =
        runtime.map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))?;
    let result = match settings.per_client {
        true => runtime.block_on(per_client::run(settings, given)),
        false => runtime.block_on(run::run(settings, given)),
    };
    // Do not wait for stray blocking I/O (say, a write to a closed terminal).
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// One line (plus the guest's backtrace, for a trap), never a panic or the
/// host's own backtrace, whatever RUST_BACKTRACE says. Each line escaped:
/// whatever text in the error a guest chose cannot start another line.
fn fail(e: anyhow::Error, _format: LogFormat) -> ExitCode {
    let text = format!("wasi-tcp-host: error: {e:#}");
    // Under systemd, at the journal's "err" priority: `journalctl -p
    // warning` shows why the host stopped.
    let priority = if logging::stderr_is_the_journal() { "<3>" } else { "" };
    for line in text.lines() {
        eprintln!("{priority}{}", escape::escape_capped(line, logging::MAX_MESSAGE));
    }
    ExitCode::FAILURE
}

/// The same with JSON logs: one JSON object, the backtrace a field of it.
fn fail_json(e: &anyhow::Error) {
    let (message, backtrace) = supervise::split_first_line(e);
    tracing::error!(event = "exit", backtrace, "wasi-tcp-host: error: {message}");
}

#[cfg(test)]
mod tests {
    /// Cargo builds wasmtime once for the host and its build script only if
    /// both see the same features on every crate below it, so the two
    /// dependency lists in Cargo.toml must be the same; if they drift,
    /// wasmtime is silently compiled twice.
    #[test]
    fn build_dependencies_mirror_dependencies() {
        let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).unwrap();
        assert_eq!(
            manifest["dependencies"], manifest["build-dependencies"],
            "[build-dependencies] must list exactly what [dependencies] does"
        );
    }
}
