//! The host's metrics as a real Prometheus sees them: scraped while
//! clients are connected, and answering a query with the number of clients
//! connected; and accepted by `promtool check metrics`.

use crate::support::clients::echo;
use crate::support::{connect, http_get, prepare, reserved_addr, Host, PATIENCE};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
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
