//! The command line.

use crate::policy::{DirGrant, NetRule};
use crate::settings::{
    self, Choices, LogFormat, Restart, Run, Settings, Size, Source, TraceDetail,
};
use anyhow::Result;
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs a WASI 0.2 TCP server component in a sandbox that grants it one
/// listen address and nothing else.
///
/// Without GUEST it runs the built-in echo server: `nc 127.0.0.1 9000`.
/// Every grant is off unless given here or in a --policy file.
#[derive(Debug, Parser)]
#[command(
    name = "wasi-tcp-host",
    version,
    override_usage = "wasi-tcp-host [OPTIONS] [GUEST.wasm] [-- GUEST_ARGS...]\n       wasi-tcp-host inspect [--json] GUEST.wasm\n       wasi-tcp-host reload PID",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A component exporting `wasi:cli/run` (for example a Rust program
    /// built with `--target wasm32-wasip2`). Default: the built-in echo server.
    #[arg(value_name = "GUEST.wasm")]
    pub guest: Option<PathBuf>,

    /// A TOML file with grants and limits (the same names as these
    /// options); options given here add to it or override it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// An address the guest may bind and listen on (repeatable; default
    /// 0.0.0.0:9000). All are passed to it, comma-separated, in the
    /// environment variable LISTEN_ADDR. Port 0 lets the system pick.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,

    /// Grant no listen address at all, for a guest that only connects out
    /// (a client): it gets no LISTEN_ADDR, and every bind and listen is
    /// denied.
    #[arg(long, conflicts_with = "listen")]
    pub no_listen: bool,

    /// Allow outbound TCP to HOST:PORT, IP:PORT or CIDR:PORT-PORT (repeatable).
    #[arg(long, value_name = "RULE")]
    pub allow_connect: Vec<NetRule>,

    /// Only let clients from this network reach the guest (repeatable;
    /// default: every client). Others are turned away before the guest sees them.
    #[arg(long, value_name = "CIDR")]
    pub allow_client: Vec<IpNet>,

    /// Allow UDP (binding, sending and receiving on any address).
    #[arg(long)]
    pub allow_udp: bool,

    /// Allow name lookups (wasi:sockets/ip-name-lookup).
    #[arg(long)]
    pub allow_dns: bool,

    /// Keep Nagle's algorithm on the guest's connections. By default the
    /// host sets TCP_NODELAY on every client the guest accepts:
    /// wasi:sockets has no way for the guest to.
    #[arg(long)]
    pub nagle: bool,

    /// Give the guest an environment variable (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Give the guest a directory: HOST[::GUEST], read-only unless `:rw`
    /// is appended (repeatable).
    #[arg(long = "dir", value_name = "HOST[::GUEST][:rw]")]
    pub dir: Vec<DirGrant>,

    /// The most linear memory the guest may use, e.g. 64MiB [default: 128MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<Size>,

    /// The most sockets (TCP listeners and connections, UDP sockets) the
    /// guest may hold at once [default: 1024, or fewer if the open-file
    /// limit is lower].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// The most files and directories the guests may hold open at once,
    /// over every instance, the --dir directories themselves included
    /// [default: 64 with --dir; none without].
    #[arg(long, value_name = "N")]
    pub max_files: Option<usize>,

    /// Stop the guest after it has computed for this long, e.g. 30s, 10m:
    /// its own code and the host calls it makes (time spent waiting for
    /// the network does not count) [default: none].
    #[arg(long, value_name = "DURATION")]
    pub cpu_budget: Option<humantime::Duration>,

    /// Close a client's connection when nothing has been received from it
    /// or sent to it for this long, e.g. 5m; the guest reads the end of the
    /// stream (`closed`) [default: none: an idle client stays, and holds
    /// a place under --max-connections].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<humantime::Duration>,

    /// When the guest has let go of a connection with bytes still on their
    /// way to a client that does not read them, how long the host goes on
    /// trying before it resets the connection, e.g. 10s [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub send_timeout: Option<humantime::Duration>,

    /// After a swap (SIGHUP, or --watch) the old instance, and after a
    /// graceful stop (SIGQUIT; Ctrl-Break on Windows) every instance, serves
    /// the clients it has until they leave, or this long, e.g. 30s
    /// [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<humantime::Duration>,

    /// Start the guest again when it traps or fails [default: never].
    #[arg(long, value_enum)]
    pub restart: Option<Restart>,

    /// Print every socket call the guest makes, in WinSock terms next to
    /// the wasi:sockets function it really was, with results and the
    /// host's policy decisions.
    #[arg(long)]
    pub trace: bool,

    /// Like --trace, and show the bytes each recv/send moved (escaped,
    /// first 64 bytes).
    #[arg(long)]
    pub trace_data: bool,

    /// Where compiled guests are kept between runs, so that a guest file
    /// is compiled once, not at every start [default: $XDG_CACHE_HOME/wasi-tcp-host
    /// or ~/.cache/wasi-tcp-host; ~/Library/Caches/wasi-tcp-host on macOS;
    /// %LOCALAPPDATA%\wasi-tcp-host on Windows].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Swap the guest when its file is replaced (a rename over it, or a
    /// write that completes), as SIGHUP does: on every platform, Windows
    /// included. A file still being written is waited for, never loaded.
    #[arg(long)]
    pub watch: bool,

    /// Compile the guest file at every start; keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,

    /// Serve Prometheus metrics (/metrics) and health (/healthz, /readyz)
    /// over HTTP on this address, e.g. 127.0.0.1:9100: the host's own
    /// listener, which no guest can be granted or reach [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    /// One guest instance per client, the inetd way: the host accepts each
    /// client itself and starts a fresh instance whose stdin reads from the
    /// connection and whose stdout writes to it (REMOTE_ADDR and
    /// REMOTE_PORT in its environment). Any command-line component serves;
    /// it needs no sockets.
    #[arg(long)]
    pub per_client: bool,

    /// The threads that run guest instances with --per-client [default:
    /// the number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// How the host writes its log lines to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Print what these grants and limits can make the host hold (the
    /// ledger, row by row) and what a systemd unit and a Kubernetes pod
    /// must allow for them, then exit without serving.
    #[arg(long)]
    pub ledger: bool,

    /// Arguments for the guest (its argv after argv[0]).
    #[arg(last = true, value_name = "GUEST_ARGS")]
    pub guest_args: Vec<String>,
}

impl Args {
    /// The settings these options and the policy file (if any) make;
    /// `handed` are the addresses of sockets a service manager passed.
    pub fn into_settings(self, handed: &[SocketAddr]) -> Result<Settings> {
        let policy = self.policy.clone();
        let file = match &policy {
            Some(path) => settings::read_policy(path)?,
            None => Choices::default(),
        };
        let run = Run {
            guest: self.guest,
            guest_args: self.guest_args,
            trace: match (self.trace, self.trace_data) {
                (_, true) => Some(TraceDetail::Data),
                (true, false) => Some(TraceDetail::Calls),
                (false, false) => None,
            },
            cache_dir: match self.no_cache {
                true => None,
                false => self.cache_dir.or_else(crate::cache::default_dir),
            },
            watch: self.watch,
            handed: handed.to_vec(),
        };
        let flags = Choices {
            listen: self.listen,
            no_listen: self.no_listen,
            allow_connect: self.allow_connect,
            allow_client: self.allow_client,
            allow_udp: self.allow_udp,
            allow_dns: self.allow_dns,
            nagle: self.nagle,
            env: self.env.into_iter().collect(),
            dir: self.dir,
            max_memory: self.max_memory,
            max_connections: self.max_connections,
            max_files: self.max_files,
            cpu_budget: self.cpu_budget.map(Into::into),
            idle_timeout: self.idle_timeout.map(Into::into),
            send_timeout: self.send_timeout.map(Into::into),
            drain_timeout: self.drain_timeout.map(Into::into),
            restart: self.restart,
            metrics: self.metrics,
            per_client: self.per_client,
            threads: self.threads,
        };
        let source = Source { policy, flags: flags.clone(), run: run.clone() };
        let mut settings = Settings::new(run, file, flags)?;
        settings.source = Some(source);
        Ok(settings)
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask the host running as PID to swap its guest (SIGHUP), and wait for
    /// the outcome: exit status 0 if the new guest serves, 1 (and why) if
    /// the swap failed. For systemd's ExecReload= (the host reports swaps in
    /// $RUNTIME_DIRECTORY).
    Reload {
        /// The host's process id (systemd: $MAINPID).
        pid: u32,
    },
    /// Ask the host running as PID to hand its listening sockets to the
    /// executable now installed where it was started from (SIGUSR2), and
    /// wait: exit status 0 once the new host serves (the old one drains
    /// and exits), 1 (and why) if it did not start serving; the old host
    /// then goes on as before. No client is refused meanwhile. Reads the
    /// outcome in $RUNTIME_DIRECTORY, as `reload` does.
    Upgrade {
        /// The running host's process id (systemd: $MAINPID).
        pid: u32,
    },
    /// Show what a component imports and exports, which grants it could
    /// use, and whether this host can run it, without running it.
    Inspect {
        /// The component file.
        #[arg(value_name = "GUEST.wasm")]
        guest: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DEFAULT_LISTEN, DEFAULT_MAX_MEMORY};
    use std::time::Duration;

    fn settings(policy: Option<&str>, flags: &[&str]) -> Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["host".to_string()];
        if let Some(text) = policy {
            let path = dir.path().join("policy.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--policy".into());
            argv.push(path.display().to_string());
        }
        argv.extend(flags.iter().map(|f| f.to_string()));
        Args::try_parse_from(argv)?.into_settings(&[])
    }

    #[test]
    fn defaults_grant_one_listen_address() {
        let s = settings(None, &[]).unwrap();
        assert_eq!(s.grants.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert!(s.grants.connect.is_empty() && s.grants.clients.is_empty());
        assert!(!s.grants.udp && !s.grants.dns && s.env.is_empty() && s.dirs.is_empty());
        assert!(!s.nagle, "TCP_NODELAY is on by default");
        assert_eq!(s.limits.max_memory, DEFAULT_MAX_MEMORY);
        assert_eq!(s.restart, Restart::Never);
        assert_eq!(s.limits.idle_timeout, None, "idle clients are held by default");
        assert_eq!(s.limits.send_timeout, Duration::from_secs(30));
        assert_eq!(s.guest_env(), vec![("LISTEN_ADDR".to_string(), DEFAULT_LISTEN.to_string())]);
    }

    #[test]
    fn per_client_and_threads_combine_as_switch_and_single_value() {
        let s = settings(Some("per-client = true\nthreads = 3"), &["--threads", "5"]).unwrap();
        assert!(s.per_client);
        assert_eq!(s.threads, 5, "the flag over the file");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings(None, &["--per-client"]).unwrap().threads, cores);
        let message = |r: Result<Settings>| r.unwrap_err().to_string();
        let refused = message(settings(Some("threads = 2"), &[]));
        assert!(refused.contains("`threads` applies to `per-client` only"), "{refused}");
        let refused = message(settings(None, &["--per-client", "--threads", "0"]));
        assert!(refused.contains("at least 1"), "{refused}");
        let refused = message(settings(None, &["--per-client", "--no-listen"]));
        assert!(refused.contains("`no-listen` grants none"), "{refused}");
        let instance = settings(None, &["--per-client", "--listen", "127.0.0.1:0"]).unwrap();
        let each = instance.for_each_client();
        assert!(each.grants.listen.is_empty(), "the instances listen nowhere");
        assert!(!each.guest_env().iter().any(|(k, _)| k == "LISTEN_ADDR"));
    }

    #[test]
    fn file_and_flags_combine_predictably() {
        let file = r#"
            listen = ["0.0.0.0:9000"]
            allow-connect = ["127.0.0.1:5432"]
            allow-udp = true
            nagle = true
            env = { A = "from-file", B = "file" }
            max-memory = "32MiB"
            max-connections = 10
            cpu-budget = "5m"
            idle-timeout = "2m"
            send-timeout = "10s"
            restart = "on-failure"
        "#;
        let s = settings(
            Some(file),
            &[
                "--listen",
                "[::]:9000",
                "--env",
                "A=from-flag",
                "--max-connections",
                "20",
                "--allow-dns",
                "--idle-timeout",
                "90s",
            ],
        )
        .unwrap();
        let listen: Vec<String> = s.grants.listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["0.0.0.0:9000", "[::]:9000"]);
        assert_eq!(s.grants.connect.len(), 1);
        assert!(s.grants.udp && s.grants.dns && s.nagle);
        assert_eq!(s.env, vec![("A".into(), "from-flag".into()), ("B".into(), "file".into())]);
        assert_eq!(s.limits.max_memory, Size(32 << 20));
        assert_eq!(s.limits.max_connections, 20);
        assert_eq!(s.limits.cpu_budget, Some(Duration::from_secs(300)));
        assert_eq!(s.limits.idle_timeout, Some(Duration::from_secs(90)), "the flag over the file");
        assert_eq!(s.limits.send_timeout, Duration::from_secs(10));
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.guest_env()[0].1, "0.0.0.0:9000,[::]:9000");
    }

    /// The policy files shipped in deploy/ are ones the host accepts (the
    /// Kubernetes ConfigMap is made from deploy/policy.toml itself, by
    /// deploy/kustomization.yaml: no copy to keep in step).
    #[test]
    fn the_shipped_policy_files_are_valid() {
        let policy = include_str!("../../deploy/policy.toml");
        let file: Choices = toml::from_str(policy).unwrap();
        assert_eq!(file.listen, ["0.0.0.0:9000".parse::<std::net::SocketAddr>().unwrap()]);
        assert_eq!(file.drain_timeout, Some(Duration::from_secs(30)));
        assert_eq!(file.idle_timeout, Some(Duration::from_secs(300)));
        let kustomization = include_str!("../../deploy/kustomization.yaml");
        assert!(kustomization.contains("configMapGenerator:"), "{kustomization}");
        assert!(kustomization.contains("      - policy.toml\n"), "{kustomization}");
        let per_client: Choices =
            toml::from_str(include_str!("../../deploy/per-client/policy.toml")).unwrap();
        assert!(
            per_client.per_client,
            "deploy/per-client/policy.toml serves one instance per client"
        );
    }

    /// The value after `key` on its line (the last one, if `key` repeats).
    fn value_after(text: &str, key: &str) -> String {
        let (_, rest) = text.rsplit_once(key).unwrap_or_else(|| panic!("no {key}"));
        rest.lines().next().unwrap().trim().trim_matches('"').to_string()
    }

    /// The unit's and the pod's limits, as `--ledger` prints them for
    /// each shipped policy: one host's descriptors, two hosts' memory and
    /// threads under systemd (an upgrade runs them side by side), one
    /// host's memory for a pod, requests equal to limits.
    #[test]
    fn the_shipped_units_and_pods_are_sized_from_the_ledger() {
        let sized = |policy: &str| settings(Some(policy), &[]).unwrap().terms().sizing();
        let mib = |bytes: u64| bytes.div_ceil(1 << 20);
        let check_unit = |unit: &str, sizing: crate::ledger::Sizing| {
            assert_eq!(value_after(unit, "\nLimitNOFILE="), sizing.descriptors.to_string());
            assert_eq!(value_after(unit, "\nMemoryMax="), format!("{}M", 2 * mib(sizing.memory)));
            assert_eq!(value_after(unit, "\nTasksMax="), (2 * sizing.threads).to_string());
        };
        let shipped = sized(include_str!("../../deploy/policy.toml"));
        check_unit(include_str!("../../deploy/systemd/wasi-tcp-host.service"), shipped);
        let per_client = sized(include_str!("../../deploy/per-client/policy.toml"));
        let drop_in =
            include_str!("../../deploy/per-client/wasi-tcp-host.service.d/per-client.conf");
        check_unit(drop_in, per_client);

        // The first `memory:` after `requests:`, and after `limits:`.
        let pod_memory = |resources: &str| {
            let after = |key: &str| {
                let (_, rest) = resources.split_once(key).unwrap();
                let (_, value) = rest.split_once("memory: ").unwrap();
                value.split(['}', '\n', ',']).next().unwrap().trim().to_string()
            };
            assert_eq!(after("requests:"), after("limits:"), "requests equal to limits");
            after("requests:")
        };
        let deployment = include_str!("../../deploy/kubernetes/deployment.yaml");
        assert_eq!(pod_memory(deployment), format!("{}Mi", mib(shipped.memory)));
        let component = include_str!("../../deploy/per-client/kustomization.yaml");
        assert_eq!(pod_memory(component), format!("{}Mi", mib(per_client.memory)));
    }

    /// The unit fails loudly: a bounded number of restarts with a growing
    /// delay, then `failed` and the OnFailure= hook; SIGTERM (the default
    /// KillSignal=) drains; the serving thread feeds a watchdog; every
    /// process may notify (an upgrade's new host becomes the main one).
    #[test]
    fn the_unit_fails_loudly_drains_and_is_watched() {
        let unit = include_str!("../../deploy/systemd/wasi-tcp-host.service");
        for (key, value) in [
            ("StartLimitIntervalSec=", "10min"),
            ("StartLimitBurst=", "5"),
            ("OnFailure=", "wasi-tcp-host-failed@%n.service"),
            ("Restart=", "on-failure"),
            ("RestartSteps=", "5"),
            ("RestartMaxDelaySec=", "30s"),
            ("WatchdogSec=", "10s"),
            ("NotifyAccess=", "all"),
            ("Type=", "notify"),
            ("TimeoutStopSec=", "40s"),
        ] {
            assert_eq!(value_after(unit, &format!("\n{key}")), value, "{key}");
        }
        assert!(!unit.contains("\nKillSignal="), "SIGTERM, the default, drains");
        let drain: Duration = humantime::parse_duration(&value_after(
            include_str!("../../deploy/policy.toml"),
            "drain-timeout = ",
        ))
        .unwrap();
        assert!(drain < Duration::from_secs(40), "TimeoutStopSec= leaves time for the drain");
        let hook = include_str!("../../deploy/systemd/wasi-tcp-host-failed@.service");
        assert!(hook.contains("Type=oneshot"), "{hook}");
    }

    /// The shipped systemd unit and Deployment agree with the shipped
    /// policy on the metrics port: the one the unit lets the host bind,
    /// the one the probes and the NetworkPolicy name.
    #[test]
    fn the_shipped_units_fit_the_policy() {
        let policy: Choices = toml::from_str(include_str!("../../deploy/policy.toml")).unwrap();
        let service = include_str!("../../deploy/systemd/wasi-tcp-host.service");
        let deployment = include_str!("../../deploy/kubernetes/deployment.yaml");
        let value_after = |text: &str, key: &str| -> String {
            let (_, rest) = text.split_once(key).unwrap_or_else(|| panic!("no {key}"));
            rest.lines().next().unwrap().trim().trim_matches('"').to_string()
        };
        let port = policy.metrics.unwrap().port();
        assert_eq!(value_after(service, "\nSocketBindAllow=tcp:"), port.to_string());
        // Only the monitoring namespace reaches the metrics port: its rule
        // is the one with a namespace selector.
        let network = include_str!("../../deploy/kubernetes/networkpolicy.yaml");
        let (_, metrics_rule) = network.split_once("namespaceSelector:").unwrap();
        assert!(metrics_rule.contains("kubernetes.io/metadata.name: monitoring"), "{network}");
        assert_eq!(value_after(metrics_rule, "- port:"), port.to_string());
        let (_, metrics_port) = deployment.split_once("- name: metrics").unwrap();
        assert_eq!(value_after(metrics_port, "containerPort:"), port.to_string());
        assert_eq!(value_after(deployment, "prometheus.io/port:"), port.to_string());
    }

    #[test]
    fn no_listen_grants_no_address_and_sets_no_listen_addr() {
        for s in [settings(None, &["--no-listen"]), settings(Some("no-listen = true"), &[])] {
            let s = s.unwrap();
            assert!(s.grants.listen.is_empty(), "{:?}", s.grants.listen);
            assert!(s.guest_env().iter().all(|(key, _)| key != "LISTEN_ADDR"));
            assert!(s.grants.summary().starts_with("no listen address"), "{}", s.grants.summary());
        }
    }

    #[test]
    fn no_listen_with_a_listen_address_is_an_error() {
        let e = settings(None, &["--no-listen", "--listen", "127.0.0.1:9000"]).unwrap_err();
        assert!(format!("{e}").contains("cannot be used with"), "{e}");
        let e = settings(Some("listen = [\"127.0.0.1:9000\"]"), &["--no-listen"]).unwrap_err();
        assert!(format!("{e}").contains("but 127.0.0.1:9000 is given too"), "{e}");
        let handed = Args::try_parse_from(["host", "--no-listen"]).unwrap();
        let e = handed.into_settings(&["127.0.0.1:9000".parse().unwrap()]).unwrap_err();
        assert!(format!("{e}").contains("handed over a socket on 127.0.0.1:9000"), "{e}");
    }

    #[test]
    fn timeouts_of_zero_are_refused() {
        let e = settings(None, &["--idle-timeout", "0s"]).unwrap_err();
        assert_eq!(format!("{e}"), "`idle-timeout` must be longer than 0");
        let e = settings(Some("send-timeout = \"0s\""), &[]).unwrap_err();
        assert_eq!(format!("{e}"), "`send-timeout` must be longer than 0");
    }

    #[test]
    fn an_unknown_key_is_an_error_with_its_line() {
        let e = settings(Some("listen = []\nallow-everything = true\n"), &[]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("line 2") && text.contains("allow-everything"), "{text}");
    }
}
