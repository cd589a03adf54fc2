//! The host's metrics as a real Prometheus sees them: scraped while
//! clients are connected, and answering a query with the number of clients
//! connected; and accepted by `promtool check metrics`.

use crate::support::clients::echo;
use crate::support::{connect, http_get, prepare, reserved_addr, Host, PATIENCE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn prometheus_scrapes_the_host_and_promtool_accepts_its_metrics(
    prometheus: &Path,
    promtool: &Path,
) {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let (addr, metrics) = (host.listen_addr(), host.metrics_addr());

    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).to_string()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "promtool check metrics:\n{said}\n{text}");

    let clients: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut client = connect(addr);
            assert!(echo(&mut client, format!("client {i}").as_bytes()));
            client
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let scrape = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasi-tcp-host\n    static_configs:\n      - targets: [\"{metrics}\"]\n"
    );
    std::fs::write(&config, scrape).unwrap();
    let web = reserved_addr();
    let mut cmd = Command::new(prometheus);
    prepare(&mut cmd)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={}", web.addr));
    let server = Host::start_command(&mut cmd);
    let query = "/api/v1/query?query=wasi_tcp_host_connections_open";
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = http_get(web.addr, query);
        let answer = (status == 200).then_some(body);
        if let Some(body) = &answer {
            if body.contains(",\"4\"]") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw 4 clients: {answer:?}\n{}",
            server.report()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    drop(clients);
}

/// The alert rules (deploy/prometheus/alerts.yml): `promtool check rules`
/// accepts them and their own unit tests pass; then they run on series
/// scraped from a real host taken through a failed swap, a guest that
/// fails and is restarted, clients turned away at the cap, log lines
/// dropped, a graceful stop and its end; each scrape stands for twenty
/// minutes of samples. Each alert fires in the phase that calls for it,
/// and in no other. Together with alerts.test.yml, every rule is tried.
pub fn the_alert_rules_fire_on_a_real_hosts_series_when_they_should(promtool: &Path) {
    let rules_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let (ok, said) =
        run(Command::new(promtool).args(["check", "rules", "alerts.yml"]).current_dir(&rules_dir));
    assert!(ok, "promtool check rules:\n{said}");
    let (ok, said) = run(Command::new(promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&rules_dir));
    assert!(ok, "promtool test rules alerts.test.yml:\n{said}");

    let phases = scrape_through_the_events();
    let summaries =
        alert_summaries(&std::fs::read_to_string(rules_dir.join("alerts.yml")).unwrap());
    let tested_elsewhere = std::fs::read_to_string(rules_dir.join("alerts.test.yml")).unwrap();
    // Where each alert should fire (the phase; the labels beyond job and
    // instance), checked a few minutes into each phase and at its end.
    let expected: &[Expected] = &[
        ("WasiTcpHostSwapFailed", 1, &[("outcome", "failed")]),
        ("WasiTcpHostGuestRestarted", 2, &[]),
        ("WasiTcpHostTurningClientsAway", 3, &[("reason", "cap")]),
        ("WasiTcpHostLogLinesDropped", 4, &[]),
        ("WasiTcpHostNotReady", 5, &[]),
        ("WasiTcpHostDown", 6, &[]),
    ];
    for name in summaries.keys() {
        let here = expected.iter().any(|(alert, ..)| alert == name);
        let there = tested_elsewhere.contains(&format!("alertname: {name}\n"));
        assert!(here || there, "{name} is tried by no test");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(rules_dir.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let test = rules_test(&phases, expected, &summaries);
    std::fs::write(dir.path().join("real.test.yml"), &test).unwrap();
    let (ok, said) = run(Command::new(promtool)
        .args(["test", "rules", "real.test.yml"])
        .current_dir(dir.path()));
    assert!(ok, "promtool test rules on the real series:\n{said}\n--- the test ---\n{test}");
}

/// An alert, the phase it fires in, and its labels besides job and instance.
type Expected = (&'static str, usize, &'static [(&'static str, &'static str)]);

/// Minutes each scrape stands for.
const PHASE: usize = 20;
const JOB: &str = r#"job="wasi-tcp-host", instance="host:9100""#;

/// One scrape: every sample, by its series (name and labels, as written).
type Scrape = std::collections::BTreeMap<String, f64>;

/// Phase 0 a fresh host; 1 after a failed swap; 2 after a restart; 3 with
/// clients turned away at the cap; 4 after dropped log lines; 5 draining
/// (SIGTERM, a client still connected); 6 gone (None).
fn scrape_through_the_events() -> Vec<Option<Scrape>> {
    let (_guest_dir, file) =
        crate::support::guests::installed(&crate::support::guests::test_guest("crash-on-bang"));
    // The log and the guests' stdout go to pipes nobody reads: once they
    // are full, lines are dropped (the host never waits for them).
    let (unread_out, out) = std::io::pipe().unwrap();
    let (unread_err, err) = std::io::pipe().unwrap();
    // Known addresses: the log, which would say them, is not read.
    let (listen, metrics) = (reserved_addr(), reserved_addr());
    let (addr, metrics) = (listen.addr, metrics.addr);
    let mut cmd = crate::support::host_command();
    cmd.args(["--listen", &addr.to_string(), "--metrics", &metrics.to_string()])
        .args(["--restart", "on-failure", "--max-connections", "3", "--drain-timeout", "5m"])
        .arg(&file)
        .stdout(out)
        .stderr(err);
    let host = Host::start_command(&mut cmd);
    let scrape = || parse(&http_get(metrics, "/metrics").1);
    let until = |series: &str, value: f64| -> Scrape {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = scrape();
            if now.get(series) == Some(&value) {
                return now;
            }
            assert!(Instant::now() < deadline, "{series} never read {value}: {now:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(metrics).is_err() {
        assert!(Instant::now() < deadline, "the host never served metrics");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut phases = vec![Some(until("wasi_tcp_host_ready", 1.0))];

    std::fs::write(&file, b"not a component").unwrap();
    host.signal(libc::SIGHUP);
    phases.push(Some(until(r#"wasi_tcp_host_swaps_total{outcome="failed"}"#, 1.0)));

    let mut bang = connect(addr);
    bang.write_all(b"!").unwrap();
    until("wasi_tcp_host_guest_restarts_total", 1.0);
    phases.push(Some(until("wasi_tcp_host_ready", 1.0)));

    // An echo server that serves many clients at once, swapped in; with
    // its listener and two clients it holds the three places: a third
    // client is turned away.
    crate::support::guests::install(&crate::support::guests::default_guest(), &file);
    host.signal(libc::SIGHUP);
    until(r#"wasi_tcp_host_swaps_total{outcome="took_over"}"#, 1.0);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut client = connect(addr);
            assert!(echo(&mut client, b"held"));
            client
        })
        .collect();
    let _turned_away = TcpStream::connect(addr);
    phases.push(Some(until(r#"wasi_tcp_host_clients_turned_away_total{reason="cap"}"#, 1.0)));
    drop(held);
    // Their places free again (one client at a time from now on fits).
    until("wasi_tcp_host_connections_open", 0.0);

    // Each client makes the guest print two lines to its stdout. Each
    // waits for the guest to close its end before the next connects, so
    // that at most one client is ever held beside the next and none is
    // turned away here (at the cap of three, with the listener).
    let deadline = Instant::now() + PATIENCE;
    while scrape().get("wasi_tcp_host_log_lines_dropped_total") == Some(&0.0) {
        assert!(Instant::now() < deadline, "no line was dropped");
        for _ in 0..200 {
            let mut client = connect(addr);
            assert!(echo(&mut client, b"x"));
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let end = client.read(&mut [0u8; 1]);
            assert!(matches!(end, Ok(0)), "the guest closes after the client: {end:?}");
        }
    }
    // The pipes are read from now on. The guest prints a client's last
    // line after letting it go, so the count is final only once a line
    // printed after all of the flood's has come through stdout: a marker
    // client's "disconnected" (one printed while the queue was still full
    // is dropped like the others: then another marker). Then, once the
    // log's reader has seen a status line asked for now (SIGUSR1: written
    // after every line before it), the log's queue has room too.
    let (said_out, out_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(unread_out).lines().map_while(Result::ok) {
            let _ = said_out.send(line);
        }
    });
    let deadline = Instant::now() + PATIENCE;
    'marked: loop {
        assert!(Instant::now() < deadline, "no marker client's last line came through stdout");
        let mut marker = connect(addr);
        assert!(echo(&mut marker, b"marker"));
        let name = format!("client disconnected: {}", marker.local_addr().unwrap());
        marker.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(matches!(marker.read(&mut [0u8; 1]), Ok(0)), "the guest closes after the marker");
        // Its line, or (dropped) the lines of whatever came after it.
        let wait = std::time::Duration::from_secs(2);
        while let Ok(line) = out_lines.recv_timeout(wait) {
            if line.contains(&name) {
                break 'marked;
            }
        }
    }
    let (said, status) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(unread_err).lines().map_while(Result::ok) {
            if line.contains("status: ") {
                let _ = said.send(());
            }
        }
    });
    host.signal(libc::SIGUSR1);
    status.recv_timeout(PATIENCE).expect("the status line");
    phases.push(Some(scrape()));

    // Accepted by the guest (not only queued) before the stop, so that
    // the stop has a client to wait for and the host stays to be scraped.
    let _staying = connect(addr);
    until("wasi_tcp_host_connections_open", 1.0);
    host.signal(libc::SIGTERM);
    phases.push(Some(until("wasi_tcp_host_ready", 0.0)));
    host.signal(libc::SIGTERM);
    let _ = host.wait();
    assert!(TcpStream::connect(metrics).is_err(), "the host is gone");
    phases.push(None);
    phases
}

/// The samples of an exposition in the classic text format.
fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Each alert's summary annotation, as alerts.yml writes it.
fn alert_summaries(rules: &str) -> std::collections::BTreeMap<String, String> {
    let mut summaries = std::collections::BTreeMap::new();
    let mut alert = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_string());
        } else if let (Some(summary), Some(name)) = (line.strip_prefix("summary: "), &alert) {
            summaries.insert(name.clone(), summary.trim_matches('"').to_string());
        }
    }
    summaries
}

/// A `promtool test rules` file: the phases' series, and for every
/// alert, at the start (a few minutes in) and the end of every phase,
/// whether it fires.
fn rules_test(
    phases: &[Option<Scrape>],
    expected: &[Expected],
    summaries: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut series: Vec<&String> = phases.iter().flatten().flat_map(|s| s.keys()).collect();
    series.sort();
    series.dedup();
    let mut text = String::from("rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    for name in series {
        let mut values: Vec<String> = Vec::new();
        for phase in phases {
            match phase.as_ref().and_then(|p| p.get(name)) {
                Some(value) => values.extend(std::iter::repeat_n(value.to_string(), PHASE)),
                // Gone: Prometheus marks the series stale at the first
                // scrape that fails, and it has no value from then on.
                None => {
                    let was_there = values.last().is_some_and(|v| v != "_");
                    values.extend(was_there.then(|| "stale".to_string()));
                    values.resize(values.len() + PHASE - usize::from(was_there), "_".to_string());
                }
            }
        }
        let labelled = match name.strip_suffix('}') {
            Some(open) => format!("{open}, {JOB}}}"),
            None => format!("{name}{{{JOB}}}"),
        };
        text += &format!(
            "      - series: '{}'\n        values: '{}'\n",
            labelled.replace('\'', "''"),
            values.join(" ")
        );
    }
    let up: Vec<&str> = phases
        .iter()
        .flat_map(|p| std::iter::repeat_n(if p.is_some() { "1" } else { "0" }, PHASE))
        .collect();
    text += &format!("      - series: 'up{{{JOB}}}'\n        values: '{}'\n", up.join(" "));
    text += "    alert_rule_test:\n";
    for phase in 0..phases.len() {
        for minute in [phase * PHASE + 4, phase * PHASE + PHASE - 1] {
            for (alert, fires_in, labels) in expected {
                text += &format!("      - eval_time: {minute}m\n        alertname: {alert}\n");
                // NotReady waits 5 minutes: four minutes in, not yet.
                let late = *alert == "WasiTcpHostNotReady" && minute % PHASE == 4;
                // The rate and increase windows (at most 15 minutes) are
                // past by the end of the phase: only what lasts still fires.
                let lasting = ["WasiTcpHostNotReady", "WasiTcpHostDown"].contains(alert);
                let at_end = minute % PHASE == PHASE - 1;
                if *fires_in != phase || late || (at_end && !lasting) {
                    text += "        exp_alerts: []\n";
                    continue;
                }
                let severity = if [
                    "WasiTcpHostSwapFailed",
                    "WasiTcpHostGuestRestarted",
                    "WasiTcpHostLogLinesDropped",
                ]
                .contains(alert)
                {
                    "ticket"
                } else {
                    "page"
                };
                let mut all =
                    format!("severity: {severity}, job: wasi-tcp-host, instance: \"host:9100\"");
                let mut summary = summaries[*alert].replace("{{ $labels.instance }}", "host:9100");
                for (key, value) in *labels {
                    all += &format!(", {key}: {value}");
                    summary = summary.replace(&format!("{{{{ $labels.{key} }}}}"), value);
                }
                text += &format!("        exp_alerts:\n          - exp_labels: {{{all}}}\n            exp_annotations:\n              summary: \"{summary}\"\n");
            }
        }
    }
    text
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}
