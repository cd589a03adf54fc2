//! The command line.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs a WASI 0.2 TCP server component in a sandbox that grants it one
/// listen address and nothing else.
///
/// Without GUEST it runs the built-in echo server: `nc 127.0.0.1 9000`.
#[derive(Debug, Parser)]
#[command(version, override_usage = "host [OPTIONS] [GUEST.wasm] [-- GUEST_ARGS...]")]
pub struct Args {
    /// A component exporting `wasi:cli/run` (for example a Rust program
    /// built with `--target wasm32-wasip2`). Default: the built-in echo server.
    #[arg(value_name = "GUEST.wasm")]
    pub guest: Option<PathBuf>,

    /// The address the guest may bind and listen on, passed to it as the
    /// environment variable LISTEN_ADDR. Port 0 lets the system pick one.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,

    /// Allow outbound TCP connections to this address (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    pub allow_connect: Vec<SocketAddr>,

    /// Allow UDP (binding, sending and receiving on any address).
    #[arg(long)]
    pub allow_udp: bool,

    /// Allow name lookups (wasi:sockets/ip-name-lookup).
    #[arg(long)]
    pub allow_dns: bool,

    /// Arguments for the guest (its argv after argv[0]).
    #[arg(last = true, value_name = "GUEST_ARGS")]
    pub guest_args: Vec<String>,
}
