//! `bench --per-client`: one guest instance per client, against a native
//! tokio server (a task per connection) and a process per connection
//! (`systemd-socket-activate --accept --inetd` running `cat`), in one run,
//! rounds interleaved; prints medians and ratios.
//!
//! - short connections: 50 clients at once, each connecting, doing one
//!   64-byte round trip and closing, again and again;
//! - server CPU per connection (its children's included);
//! - 1000 clients connected and idle, each its own instance: RSS growth;
//! - a guest computing about a millisecond per message: messages per
//!   second with `--threads 1` and `--threads 2`.

use crate::load;
use crate::servers::{Running, Server};
use crate::Results;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use tokio::runtime::Runtime;

const NATIVE: &str = "native tokio";
const HOST: &str = "host --per-client";
const INETD: &str = "process per connection";
const BASELINE: &str = "host --per-client (baseline)";

/// Clients connecting at once in the short-connection load.
const CLIENTS: usize = 50;
/// How long each short-connection measure runs.
const SHORT_FOR: Duration = Duration::from_secs(3);
/// The computing guest's work per message (thousands of multiply-adds).
const WORK: &str = "work=800";

/// `baseline`: another build of the host, run as [`BASELINE`] in the same
/// rounds (`bench --per-client --baseline-host PATH`).
pub fn run(
    runtime: &Runtime,
    bin_dir: &Path,
    rounds: usize,
    baseline: Option<&Path>,
) -> Result<()> {
    let guests = bin_dir.join("../guests/wasm32-wasip2/release");
    let (echo, tricks) = (guests.join("echo-stdio.wasm"), guests.join("stdio-tricks.wasm"));
    if !echo.exists() || !tricks.exists() {
        bail!(
            "{} and stdio-tricks.wasm are missing: `cargo test` builds them (or CARGO_TARGET_DIR=target/guests \
             cargo build --release --target wasm32-wasip2 -p guest-per-client -p test-guests)",
            echo.display()
        );
    }
    let host = bin_dir.join("wasi-tcp-host");
    let per_client_at = |host: &Path, name, guest: &Path, extra: &[&str]| {
        let mut args = vec!["--per-client", "--max-connections", "2000", "--listen", "{addr}"];
        args.extend_from_slice(extra);
        let mut args: Vec<String> = args.into_iter().map(Into::into).collect();
        args.push(guest.display().to_string());
        Server::custom(name, host, args)
    };
    let per_client = |name, guest: &Path, extra: &[&str]| per_client_at(&host, name, guest, extra);
    let mut servers = vec![Server::native(bin_dir), per_client(HOST, &echo, &[])];
    if let Some(baseline) = baseline {
        servers.push(per_client_at(baseline, BASELINE, &echo, &[]));
    }
    match Server::inetd_cat(INETD) {
        Some(inetd) => servers.push(inetd),
        None => eprintln!(
            "note: systemd-socket-activate is not on PATH; leaving out the process per connection"
        ),
    }
    for server in &servers {
        server.check()?;
    }
    let mut results = Results::default();
    let running: Vec<Running> = servers.iter().map(Server::start).collect::<Result<_>>()?;
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (server, run) in servers.iter().zip(&running) {
            let cpu_before = run.cpu()?;
            let connections = runtime
                .block_on(load::short_connections(run.addr, CLIENTS, 64, SHORT_FOR))
                .with_context(|| format!("short connections on {}", server.name))?;
            let cpu = run.cpu()? - cpu_before;
            let per_s = connections as f64 / SHORT_FOR.as_secs_f64();
            results.add("short connections: connections/s", server.name, per_s);
            let cpu_us = (cpu.user + cpu.system).as_secs_f64() * 1e6 / connections as f64;
            results.add("short connections: server CPU per connection (us)", server.name, cpu_us);
        }
    }
    drop(running);

    // 1000 idle clients, each its own instance.
    for server in &servers[..2] {
        let run = server.start()?;
        let idle = run.rss()?;
        let held = runtime.block_on(load::open_echoing(run.addr, 1000))?;
        let with_clients = run.rss()?;
        drop(held);
        let per_client_kib = with_clients.saturating_sub(idle) as f64 / 1000.0 / 1024.0;
        results.add("RSS idle (MB)", server.name, idle as f64 / 1e6);
        results.add("RSS with 1000 idle clients (MB)", server.name, with_clients as f64 / 1e6);
        results.add("RSS per idle client (KiB)", server.name, per_client_kib);
    }

    // A guest that computes: one thread against two.
    let computing = [
        per_client("--threads 1", &tricks, &["--threads", "1"]),
        per_client("--threads 2", &tricks, &["--threads", "2"]),
    ];
    let computing_runs: Vec<Running> =
        computing.iter().map(|s| s.start_with_args(&["--", WORK])).collect::<Result<_>>()?;
    let mut threads = Results::default();
    for _ in 0..rounds {
        for (server, run) in computing.iter().zip(&computing_runs) {
            let scenario =
                load::Scenario { name: "computing", conns: 8, size: 64, round_trips_per_conn: 100 };
            let outcome = runtime.block_on(load::ping_pong(run.addr, scenario))?;
            threads.add("computing guest: messages/s", server.name, outcome.round_trips_per_s);
            threads.add("computing guest: p50 (ms)", server.name, outcome.p50.as_secs_f64() * 1e3);
        }
    }

    println!("# one instance per client: {rounds} rounds, {CLIENTS} clients at once, 64 B");
    print(&results, &servers.iter().map(|s| s.name).collect::<Vec<_>>(), NATIVE);
    println!("\n# a guest computing {WORK} per message, 8 clients");
    print(&threads, &["--threads 1", "--threads 2"], "--threads 1");
    Ok(())
}

/// A table: a column per server, then each one's ratio to `base`.
fn print(results: &Results, names: &[&'static str], base: &str) {
    let others: Vec<&&str> = names.iter().filter(|n| **n != base).collect();
    let mut header: Vec<String> = vec!["measure".into()];
    header.extend(names.iter().map(|n| n.to_string()));
    header.extend(others.iter().map(|n| format!("{n} / {base}")));
    // The comparisons that matter beside the base: with a process per
    // connection, and with another build of the host.
    let pairs: Vec<(&str, &str)> = [(HOST, INETD), (HOST, BASELINE)]
        .into_iter()
        .filter(|(a, b)| names.contains(a) && names.contains(b))
        .collect();
    header.extend(pairs.iter().map(|(a, b)| format!("{a} / {b}")));
    println!("\n| {} |", header.join(" | "));
    println!("|{}", " --- |".repeat(header.len()));
    for measure in results.measures() {
        let value = |name: &str| results.median(&measure, name);
        let mut row = vec![measure.clone()];
        row.extend(names.iter().map(|n| value(n).map_or("-".into(), crate::format_value)));
        row.extend(others.iter().map(|n| crate::ratio(value(n), value(base))));
        row.extend(pairs.iter().map(|(a, b)| crate::ratio(value(a), value(b))));
        println!("| {} |", row.join(" | "));
    }
}
