//! `host`: runs a WASI 0.2 TCP server component, granting it one listen
//! address and nothing else.
//!
//! ```text
//! cargo run -p host                        # the built-in echo server on 0.0.0.0:9000
//! cargo run -p host -- guest.wasm          # your own component
//! ```

mod cli;
mod engine;
mod guest;
mod policy;
mod run;
mod sandbox;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(run::run(args));
    // Do not wait for stray blocking I/O (say, a write to a closed terminal).
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

/// One line (plus the guest's backtrace, for a trap), never a panic or the
/// host's own backtrace, whatever RUST_BACKTRACE says.
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
