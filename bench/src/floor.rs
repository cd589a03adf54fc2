//! The floor (`bench --floor`): what a call from a guest into its host
//! costs, timed by a guest itself (`tests/guests/src/bin/call-floor.rs`),
//! on this host and on the wasmtime CLI: a call with nothing to lift, a
//! call on a borrowed stream, and `poll` over 1 to 1 000 pollables with one
//! ready. Whatever a host does for a guest, an echo costs it at least its
//! calls, and a `poll` at least its list: the floor says how far below
//! native's latency a WASI 0.2 guest can come, and why the open loop at
//! 100 and 1 000 connections cannot reach native's (docs/performance.md).

use crate::servers::Server;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's measures, in the order it prints them.
const MEASURES: [&str; 6] = ["now", "check-write", "poll-1", "poll-10", "poll-100", "poll-1000"];

/// Builds the floor guest, runs it on each server `rounds` times, and
/// prints the fastest figure of each measure (a floor: the least it cost).
pub fn run(bin_dir: &Path, rounds: usize, with_cli: bool) -> Result<()> {
    let guest = build_guest(bin_dir)?;
    let guest_arg = guest.to_str().context("the floor guest's path")?.to_string();
    // The host takes the guest as its last argument; the CLI's is in its own.
    let mut servers = vec![(Server::host(bin_dir), vec![guest_arg])];
    match Server::wasmtime_cli(&guest) {
        Some(cli) if with_cli => servers.push((cli, vec![])),
        Some(_) => {}
        None => eprintln!("wasmtime CLI not found: measuring the host only"),
    }
    let mut least: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("floor, round {}/{rounds}", round + 1);
        for (server, extra) in &servers {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let figures =
                measure(server, &extra).with_context(|| format!("{}: the floor", server.name))?;
            for (measure, ns) in figures {
                let slot = least.entry((server.name, measure)).or_insert(f64::INFINITY);
                *slot = slot.min(ns);
            }
        }
    }
    let servers: Vec<Server> = servers.into_iter().map(|(server, _)| server).collect();
    print_table(&servers, &least);
    Ok(())
}

/// `cargo build` of the floor guest into the target directory the tests'
/// guests use; its path.
fn build_guest(bin_dir: &Path) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = bin_dir.join("..").join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--locked", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .args(["--package", "test-guests", "--bin", "call-floor"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .context("running cargo to build the floor guest")?;
    if !status.success() {
        bail!("building the floor guest (tests/guests/src/bin/call-floor.rs) failed");
    }
    Ok(target_dir.join("wasm32-wasip2/release/call-floor.wasm"))
}

/// One run of the floor guest on `server`: nanoseconds per call, by measure.
fn measure(server: &Server, extra: &[&str]) -> Result<Vec<(&'static str, f64)>> {
    let mut running = server.spawn_piped(extra)?;
    let stdout = running.stdout().context("no standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next =
        || -> Result<String> { Ok(lines.next().context("the guest ended before `floor done`")??) };
    // The guest's own lines start with "floor"; the host's log is on stderr.
    while next()? != "floor listening" {}
    // The client the guest times its calls on; it sends nothing.
    let _client = TcpStream::connect(running.addr).context("connecting to the floor guest")?;
    let mut figures = Vec::new();
    loop {
        let line = next()?;
        if line == "floor done" {
            break;
        }
        let mut words = line.split_whitespace().skip(1);
        let (Some(name), Some(ns)) = (words.next(), words.next()) else { continue };
        if let Some(measure) = MEASURES.iter().find(|m| **m == name) {
            figures.push((*measure, ns.parse::<f64>().with_context(|| line.clone())?));
        }
    }
    if figures.len() != MEASURES.len() {
        bail!("the guest printed {} of the {} measures", figures.len(), MEASURES.len());
    }
    Ok(figures)
}

/// One row per measure, one column per server, and each pollable's share.
fn print_table(servers: &[Server], least: &BTreeMap<(&str, &str), f64>) {
    let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
    println!("\n| the floor: ns per call, the least of all rounds | {} |", names.join(" | "));
    println!("|{}", " --- |".repeat(names.len() + 1));
    for measure in MEASURES {
        let cells: Vec<String> = names
            .iter()
            .map(|name| least.get(&(*name, measure)).map_or("-".into(), |ns| format!("{ns:.0}")))
            .collect();
        println!("| {measure} | {} |", cells.join(" | "));
    }
    // What one more pollable adds, from the longest list and the shortest.
    let per_pollable: Vec<String> = names
        .iter()
        .map(|name| match (least.get(&(*name, "poll-1000")), least.get(&(*name, "poll-1"))) {
            (Some(long), Some(short)) => format!("{:.1}", (long - short) / 999.0),
            _ => "-".into(),
        })
        .collect();
    println!("| poll: each pollable more | {} |", per_pollable.join(" | "));
}
