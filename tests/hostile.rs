//! Guests that try to exhaust the machine, or to get past the grants, and
//! what the host does about it.

use crate::support::clients::assert_reset;
use crate::support::guests::test_guest;
use crate::support::traffic::reset;
use crate::support::{assert_echoes, connect, host_command, Host};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn guest(name: &str) -> String {
    test_guest(name).display().to_string()
}

/// Resident memory of a running process, in bytes.
#[cfg(target_os = "linux")]
fn rss(host: &Host) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn a_guest_allocating_without_end_is_stopped_with_a_message_naming_the_limit() {
    let (status, output) =
        Host::start(&["--listen", "127.0.0.1:0", "--max-memory", "32MiB", &guest("alloc-forever")])
            .wait();
    assert!(!status.success(), "{output}");
    assert!(output.contains("refused: the guest asked to grow its memory"), "{output}");
    assert!(
        output.contains(
            "error: the guest trapped after reaching its memory limit of 32MiB (--max-memory)"
        ),
        "{output}"
    );
}

#[cfg(target_os = "linux")] // reads /proc
fn the_host_stays_within_the_memory_limit_plus_its_own_overhead() {
    const LIMIT: u64 = 64 << 20;
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--max-memory",
        "64MiB",
        &guest("alloc-forever"),
        "--",
        "--gently",
    ]);
    let line = host.wait_for("allocation refused after");
    let got: u64 = line.rsplit(' ').nth(1).unwrap().parse().unwrap();
    assert!((60..64).contains(&got), "{line}");
    // The guest holds (and has touched) almost all of its 64 MiB now. The
    // host's own share: a debug build of wasmtime and the guest's code,
    // about 27 MiB as measured.
    let resident = rss(&host);
    assert!(resident < LIMIT + (40 << 20), "host RSS {} MiB\n{}", resident >> 20, host.output());
}

/// Refused at the cap, every time it asks; the log says so at most ten
/// times a second, and counts the rest.
fn a_guest_creating_sockets_without_end_is_refused_at_the_cap() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "50",
        &guest("socket-hoarder"),
    ]);
    let written = host.wait_for_total(
        "refused: a new TCP socket: the guests already hold 50 sockets (--max-connections 50)",
        "refused new sockets",
        100,
    );
    assert!(written <= 20, "{written} lines for 100 refusals");
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("refused after 50 sockets: new-socket-limit"), "{output}");
    assert!(output.contains("refused 99 times more"), "{output}");
}

/// Waiting is not computing: a guest that waits for clients several times
/// longer than its CPU budget keeps serving, through enough echoes after
/// the wait for the budget to be looked at again.
fn time_spent_waiting_does_not_count_against_the_cpu_budget() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--cpu-budget", "300ms"]);
    let addr = host.listen_addr();
    assert_echoes(addr, b"before waiting");
    // Not a wait for something to happen: five budgets' worth of waiting.
    std::thread::sleep(Duration::from_millis(1500));
    let mut client = connect(addr);
    for i in 0..300 {
        let message = format!("after waiting {i}");
        assert!(
            crate::support::clients::echo(&mut client, message.as_bytes()),
            "{}",
            host.report()
        );
    }
    assert!(!host.output().contains("--cpu-budget"), "{}", host.report());
}

/// With no --listen, the host serves on 0.0.0.0:9000 (the study notes'
/// port), and grants that alone. In a network namespace of its own, so
/// that no program on the machine's port 9000 is in its way (nor it in
/// theirs); the client joins that namespace.
#[cfg(target_os = "linux")]
fn with_no_listen_address_the_host_serves_on_port_9000() {
    let host = Host::start_command(&mut crate::support::in_own_network(host_command()));
    host.wait_for("granted: listen on 0.0.0.0:9000; everything else is denied");
    assert_eq!(host.listen_addr(), "0.0.0.0:9000".parse().unwrap());
    crate::support::in_network_of(&host, || {
        assert_echoes("127.0.0.1:9000".parse().unwrap(), b"port 9000")
    });
}

/// Without --max-connections the cap follows the open-file limit (less 64
/// descriptors for the host itself), so the guest is refused politely
/// before the process runs out of descriptors.
fn the_default_socket_cap_stays_under_the_open_file_limit() {
    let mut cmd = host_command();
    cmd.args(["--listen", "127.0.0.1:0", &guest("socket-hoarder")]);
    crate::support::with_open_file_limit(&mut cmd, 200);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(status.success(), "{output}");
    // 200, less 64 for the host itself and 1 for its listener.
    assert!(output.contains("refused after 135 sockets: new-socket-limit"), "{output}");
    assert!(output.contains("(--max-connections 135)"), "{output}");
}

fn clients_beyond_the_cap_are_turned_away_until_a_place_is_free() {
    // One place for the listener, two for clients.
    let host = Host::start(&["--listen", "127.0.0.1:0", "--max-connections", "3"]);
    let addr = host.listen_addr();
    let mut first = connect(addr);
    let second = connect(addr);
    first.write_all(b"1").unwrap();
    first.read_exact(&mut [0u8; 1]).unwrap();
    host.wait_for_nth("client connected", 2);

    // The third is accepted by the kernel, then reset by the host before
    // the guest sees it (on a busy machine, before connect() returns).
    match crate::support::connect_unless_reset(addr) {
        Ok(mut third) => {
            let peer = third.local_addr().unwrap();
            host.wait_for(&format!("refused: a client from {peer}, turned away"));
            assert_reset(&mut third);
            // The audit trail does not call it accepted.
            host.settled();
            let output = host.output();
            assert!(!output.contains(&format!("accepted a client from {peer}")), "{output}");
        }
        Err(()) => drop(host.wait_for("turned away")),
    }
    assert_eq!(host.output().matches("guest accepted a client").count(), 2, "{}", host.report());

    // A place frees up when a client leaves.
    drop(second);
    host.wait_for("client disconnected");
    assert_echoes(addr, b"now there is room");
    drop(first);
}

/// A client outside --allow-client is reset before the guest sees it; one
/// inside is served. (The guest prints a line for each client it accepts,
/// in order: once the allowed one's is there, the denied one's would be.)
fn clients_outside_allow_client_never_reach_the_guest() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--allow-client", "127.0.0.2/32"]);
    let addr = host.listen_addr();
    // Reset as it connects (on a busy machine), or right after.
    let client = crate::support::connect_unless_reset(addr);
    host.wait_for("denied: TCP client from 127.0.0.1");
    if let Ok(mut client) = client {
        assert_reset(&mut client);
    }
    let allowed = crate::support::connect_from("127.0.0.2", addr);
    crate::support::assert_echoes_on(allowed, b"welcome", &[7]);
    host.wait_for("client connected: 127.0.0.2");
    assert!(!host.output().contains("client connected: 127.0.0.1"), "{}", host.output());
}

/// A guest that spins is stopped by its CPU budget, once it has used it
/// and within twice it (the host process's CPU time from its first line).
#[cfg(target_os = "linux")] // reads /proc
fn a_spinning_guest_is_stopped_by_its_cpu_budget() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--cpu-budget", "300ms", &guest("spin")]);
    host.wait_for("spinning");
    let used = cpu_until_exit(&host);
    let (status, output) = host.wait();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("error: the guest used up its CPU budget of 300ms (--cpu-budget)"),
        "{output}"
    );
    let budget = Duration::from_millis(300);
    assert!(used <= 2 * budget, "stopped after {used:?} of CPU\n{output}");
    assert!(used >= budget / 2, "stopped after only {used:?} of CPU\n{output}");
}

/// The host process's CPU time from now until it exits (its last reading).
#[cfg(target_os = "linux")]
fn cpu_until_exit(host: &Host) -> Duration {
    let start = host.cpu_time();
    let mut last = start;
    let deadline = Instant::now() + crate::support::PATIENCE;
    while !host.has_exited() {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.cpu_time())) {
            Ok(now) => last = now,
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "it never stopped\n{}", host.report());
        std::thread::sleep(Duration::from_millis(10));
    }
    last - start
}

/// --cpu-budget charges the CPU the guest causes, host calls included: a
/// guest that only asks the host for random bytes (a megabyte at a time:
/// all its time in host calls) is stopped once it has used its budget,
/// within twice it, counted as the host process's CPU time from its start.
#[cfg(target_os = "linux")] // reads /proc
fn a_guest_looping_on_host_calls_is_stopped_within_twice_its_cpu_budget() {
    let budget = Duration::from_secs(1);
    let host =
        Host::start(&["--listen", "127.0.0.1:0", "--cpu-budget", "1s", &guest("random-loop")]);
    host.wait_for("asking");
    let used = cpu_until_exit(&host);
    let (status, output) = host.wait();
    assert!(!status.success(), "{output}");
    assert!(output.contains("the guest used up its CPU budget of 1s (--cpu-budget)"), "{output}");
    assert!(used <= 2 * budget, "stopped after {used:?} of CPU\n{output}");
    assert!(used >= budget / 2, "stopped after only {used:?} of CPU\n{output}");
}

/// --cpu-budget charges what the guest uses, not a tick: a client that
/// sends one byte every 11 ms, 270 times, wakes the guest 270 times, a few
/// dozen microseconds each. Charged a 10 ms tick for each wake, it would
/// spend a 300 ms budget nine times over; it is served throughout, and the
/// metric reports what it used.
fn sparse_traffic_is_not_charged_more_than_it_uses() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--cpu-budget",
        "300ms",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let (addr, metrics) = (host.listen_addr(), host.metrics_addr());
    let mut client = connect(addr);
    // Counted, not timed: a busy machine stretches the three seconds.
    let wakes = 270;
    for wake in 0..wakes {
        assert!(crate::support::clients::echo(&mut client, b"x"), "wake {wake}\n{}", host.report());
        std::thread::sleep(Duration::from_millis(11));
    }
    host.settled();
    assert!(!host.output().contains("--cpu-budget"), "{}", host.report());
    let (_, text) = crate::support::http_get(metrics, "/metrics");
    let used = crate::support::sample(&text, "wasi_tcp_host_guest_cpu_seconds_total").unwrap();
    assert!(used < 0.3, "the metric says {used} s for {wakes} wakes\n{text}");
}

/// A guest may ask for at most 1 MiB of random bytes at a time (the host
/// makes them before the guest's memory takes them): more traps.
fn random_bytes_are_asked_for_a_megabyte_at_most() {
    let (status, output) =
        Host::start(&["--listen", "127.0.0.1:0", &guest("random-loop"), "--", "too-many"]).wait();
    assert!(!status.success(), "{output}");
    assert!(!output.contains("got more than 1 MiB"), "{output}");
    assert!(output.contains("requested len 1048577 exceeds limit 1048576"), "{output}");
}

fn a_bad_client_input_cannot_take_the_service_down_with_restart_on_failure() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--restart",
        "on-failure",
        &guest("crash-on-bang"),
    ]);
    let addr = host.listen_addr();
    assert_echoes(addr, b"hello");

    let mut bad = connect(addr);
    bad.write_all(b"!").unwrap();
    let restart = host.wait_for(
        "the guest failed: the guest trapped: wasm trap: wasm `unreachable` instruction executed",
    );
    assert!(restart.ends_with("; restarting it in 100ms"), "{restart}");
    drop(bad);
    // The restarted guest listens again (on a new port: the grant is port 0).
    assert_echoes(host.nth_listen_addr(2), b"served again");
}

fn a_guest_that_keeps_failing_is_given_up_on() {
    let args = ["--listen", "127.0.0.1:0", "--restart", "on-failure", &guest("trap")];
    let (status, output) = Host::start(&args).wait();
    assert!(!status.success(), "{output}");
    assert_eq!(output.matches("restarting it in").count(), 4, "{output}");
    assert!(
        output.contains("error: the guest failed 5 times within 60s; not restarting it again"),
        "{output}"
    );
}

/// With `--log-format json`, stderr holds nothing but JSON objects, one a
/// line: the events of a run (the guest's own stderr among them), and the
/// error a host exits with, a trap's backtrace as a field of it.
fn with_json_logs_stderr_is_one_json_object_per_line_and_nothing_else() {
    let host = json_host(&["--listen", "127.0.0.1:0"]);
    let addr = host.listen_addr_json();
    assert_echoes(addr, b"audit me");
    reset(connect(addr));
    host.wait_for("\"event\":\"accept\"");
    host.signal(libc::SIGTERM);
    let (status, output) = host.wait();
    assert!(status.success());
    let events = parse_every_line(&output);
    for expected in ["environment", "bind", "listen", "accept", "stop"] {
        assert!(events.iter().any(|e| e["event"] == expected), "no {expected} event in {output}");
    }

    // A guest that traps: its panic message (its stderr) and the host's
    // error, with the wasm backtrace as a field.
    let (status, output) = json_host(&["--listen", "127.0.0.1:0", &guest("trap")]).wait();
    assert!(!status.success());
    let events = parse_every_line(&output);
    let panicked = |e: &&serde_json::Value| {
        e["event"] == "guest-stderr" && e["message"].as_str().unwrap().contains("panicked at")
    };
    assert!(events.iter().any(|e| panicked(&e)), "the guest's stderr is missing\n{output}");
    let exit = events.last().unwrap();
    assert_eq!(exit["event"], "exit", "{output}");
    assert!(exit["message"]
        .as_str()
        .unwrap()
        .starts_with("wasi-tcp-host: error: the guest trapped"));
    assert!(exit["backtrace"].as_str().unwrap().contains("fail_on_purpose"), "{output}");

    // The guest's stdout, on the host's stdout: JSON objects too, marked as
    // the guest's, with its instance.
    let mut cmd = host_command();
    cmd.args(["--log-format", "json", "--listen", "127.0.0.1:0", &guest("crash-on-bang")]);
    let host = Host::start_command(cmd.stderr(std::process::Stdio::null()));
    let line: serde_json::Value =
        serde_json::from_str(&host.wait_for("crash-on-bang listening")).unwrap();
    assert_eq!(line["event"], "guest-stdout", "{line}");
    assert_eq!(line["instance"], 1, "{line}");
    assert_eq!(line["message"], "crash-on-bang listening", "{line}");

    // An error before any guest runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (status, output) = json_host(&["--listen", &taken]).wait();
    assert!(!status.success());
    let events = parse_every_line(&output);
    assert_eq!(events.len(), 1, "{output}");
    assert!(events[0]["message"].as_str().unwrap().contains("already in use"), "{output}");
}

/// A host with JSON logs whose stdout (the guest's) goes nowhere, so that
/// the output collected is its stderr alone.
fn json_host(args: &[&str]) -> Host {
    let mut cmd = host_command();
    cmd.arg("--log-format").arg("json").args(args).stdout(std::process::Stdio::null());
    Host::start_command(&mut cmd)
}

/// Every line parsed as a JSON object with a timestamp, a level and a
/// message; a line that is not fails the test.
fn parse_every_line(output: &str) -> Vec<serde_json::Value> {
    let parse = |line: &str| {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let fields = ["timestamp", "level", "message"];
        assert!(fields.iter().all(|f| value[f].is_string()), "{line}");
        value
    };
    output.lines().map(parse).collect()
}

/// The other audit events, as JSON, each with the address it was about.
fn with_json_logs_connects_udp_binds_and_denials_name_their_address() {
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = outside.local_addr().unwrap().to_string();
    let mut cmd = host_command();
    cmd.args(["--log-format", "json", "--listen", "127.0.0.1:0"])
        .args(["--allow-connect", &target, "--allow-udp", &guest("sandbox-probe")])
        .args(["--", "127.0.0.1:9", &target, "/nowhere", "HOME", "localhost"]);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(status.success(), "{output}");
    let events: Vec<serde_json::Value> = output
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find =
        |event: &str, addr: &str| events.iter().any(|v| v["event"] == event && v["addr"] == addr);
    assert!(find("connect", &target), "{output}");
    assert!(find("udp-bind", "0.0.0.0:0"), "{output}");
    assert!(find("denied", "127.0.0.1:9"), "{output}");
    let dns = events.iter().any(|v| v["event"] == "denied" && v["name"] == "localhost");
    assert!(dns, "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        a_guest_allocating_without_end_is_stopped_with_a_message_naming_the_limit,
        #[cfg(target_os = "linux")]
        the_host_stays_within_the_memory_limit_plus_its_own_overhead,
        a_guest_creating_sockets_without_end_is_refused_at_the_cap,
        time_spent_waiting_does_not_count_against_the_cpu_budget,
        #[cfg(target_os = "linux")]
        with_no_listen_address_the_host_serves_on_port_9000 [needs need::root(), need::program("unshare")],
        the_default_socket_cap_stays_under_the_open_file_limit,
        clients_beyond_the_cap_are_turned_away_until_a_place_is_free,
        clients_outside_allow_client_never_reach_the_guest,
        #[cfg(target_os = "linux")]
        a_spinning_guest_is_stopped_by_its_cpu_budget,
        #[cfg(target_os = "linux")]
        a_guest_looping_on_host_calls_is_stopped_within_twice_its_cpu_budget,
        sparse_traffic_is_not_charged_more_than_it_uses,
        random_bytes_are_asked_for_a_megabyte_at_most,
        a_bad_client_input_cannot_take_the_service_down_with_restart_on_failure,
        a_guest_that_keeps_failing_is_given_up_on,
        with_json_logs_stderr_is_one_json_object_per_line_and_nothing_else,
        with_json_logs_connects_udp_binds_and_denials_name_their_address,
    ]
}
