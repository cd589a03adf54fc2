//! What the host counts for its operators, in Prometheus' terms
//! (`--metrics ADDR:PORT` serves them, `observe.rs`). Counted always,
//! whether anyone scrapes or not: each is an atomic, so counting is cheap.
//!
//! Every name starts with `wasi_tcp_host_` (but the standard `process_*`
//! ones, `process_metrics.rs`); counters end in `_total`; every labelled
//! series exists from the start, at 0; label values are snake_case.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

/// A label's values: an enum whose variants are shown in snake case.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant,)* }

        impl $name {
            /// Every value: each series exists (at 0) from the start.
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// As the metrics (and JSON logs) show it.
            #[allow(dead_code)]
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.name())
            }
        }
    };
}

label_values!(
    /// Why a client was turned away before its guest saw it.
    TurnedAway {
        /// `--max-connections` was reached.
        Cap = "cap",
        /// Not in `--allow-client`.
        NotAllowed = "not_allowed",
        /// The process had no descriptor left.
        NoDescriptor = "no_descriptor",
    }
);

label_values!(
    /// Why the host closed or reset a client on its own.
    Closed {
        /// `--idle-timeout`.
        IdleTimeout = "idle_timeout",
        /// `--send-timeout`: the client took nothing after the guest let go.
        SendTimeout = "send_timeout",
    }
);

label_values!(
    /// How a guest instance failed.
    Failure {
        /// A trap (a Rust panic, an `unreachable`, ...).
        Trap = "trap",
        /// It reached `--max-memory`, then failed.
        Memory = "memory",
        /// `--cpu-budget` was spent.
        CpuBudget = "cpu_budget",
        /// Its handles reached their limit.
        Handles = "handles",
        /// It exited with an error status, or `run` returned `err`.
        Exit = "exit",
        /// It could not be instantiated (too many instances, memories, ...).
        Refused = "refused",
    }
);

label_values!(
    /// How a swap (SIGHUP) ended.
    SwapOutcome {
        TookOver = "took_over",
        Failed = "failed",
    }
);

label_values!(
    /// How an old instance's drain ended.
    DrainOutcome {
        /// Its last client left.
        NoClients = "no_clients",
        /// `--drain-timeout` passed with clients left.
        TimedOut = "timed_out",
        /// The instance itself ended.
        Ended = "ended",
    }
);

label_values!(
    /// The kinds of log line the rate limit counts (`log_limit.rs`).
    LogLines {
        Bind = "bind",
        Listen = "listen",
        Accept = "accept",
        Connect = "connect",
        UdpBind = "udp_bind",
        BindDenied = "bind_denied",
        ListenDenied = "listen_denied",
        ClientDenied = "client_denied",
        ConnectDenied = "connect_denied",
        UdpDenied = "udp_denied",
        UdpSocketDenied = "udp_socket_denied",
        NameLookupDenied = "name_lookup_denied",
        DirectoryDenied = "directory_denied",
        EnvironmentRead = "environment_read",
        SocketRefused = "socket_refused",
        FileRefused = "file_refused",
        TurnedAwayAtCap = "turned_away_at_cap",
        TurnedAwayNoDescriptor = "turned_away_no_descriptor",
        MemoryGrowthRefused = "memory_growth_refused",
        HandleLimitReached = "handle_limit_reached",
        SendGivenUp = "send_given_up",
        IdleClientClosed = "idle_client_closed",
        GuestStderr = "guest_stderr",
        InstanceFailed = "instance_failed",
        InstanceExitedWithError = "instance_exited_with_error",
        InstanceStoppedWithConnection = "instance_stopped_with_connection",
        MetricsAcceptFailed = "metrics_accept_failed",
    }
);

/// The label sets: one label each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnedAwayLabels {
    pub reason: TurnedAway,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub reason: Closed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: Failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwapLabels {
    pub outcome: SwapOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainLabels {
    pub outcome: DrainOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogKind {
    pub kind: LogLines,
}

/// The guest that serves new clients: its name (`--` a file's path, or
/// the built-in one's) and the SHA-256 of its component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestInfo {
    pub guest: String,
    pub digest: String,
}

pub struct Metrics {
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    pub turned_away: Family<TurnedAwayLabels, Counter>,
    pub closed: Family<ClosedLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub guest_starts: Counter,
    pub guest_restarts: Counter,
    pub guest_failures: Family<FailureLabels, Counter>,
    pub swaps: Family<SwapLabels, Counter>,
    pub drains: Family<DrainLabels, Counter>,
    /// Every live instance's linear memory, over all its memories.
    pub guest_memory: Gauge<u64, AtomicU64>,
    /// One instance's limit (--max-memory).
    pub guest_memory_limit: Gauge<u64, AtomicU64>,
    /// The limit on `guest_memory`: every instance's together (the ledger).
    pub guest_memory_total_limit: Gauge<u64, AtomicU64>,
    pub connections_max: Gauge,
    pub guest_info: Family<GuestInfo, Gauge>,
    /// Compute time the guests used (in epoch ticks of 10 ms), in all.
    pub guest_cpu_seconds: Counter<f64, AtomicU64>,
    pub guest_cpu_budget: Gauge<f64, AtomicU64>,
    pub log_lines_suppressed: Family<LogKind, Counter>,
    pub log_lines_dropped: Counter,
    pub ready: Gauge,
    registry: Registry,
}

/// The host's metrics, one set for the process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            turned_away: Family::default(),
            closed: Family::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            guest_starts: Counter::default(),
            guest_restarts: Counter::default(),
            guest_failures: Family::default(),
            swaps: Family::default(),
            drains: Family::default(),
            guest_memory: Gauge::default(),
            guest_memory_limit: Gauge::default(),
            guest_memory_total_limit: Gauge::default(),
            connections_max: Gauge::default(),
            guest_info: Family::default(),
            guest_cpu_seconds: Counter::default(),
            guest_cpu_budget: Gauge::default(),
            log_lines_suppressed: Family::default(),
            log_lines_dropped: Counter::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        let ours = registry.sub_registry_with_prefix("wasi_tcp_host");
        metrics.register_clients(ours);
        metrics.register_guests(ours);
        metrics.register_host(ours);
        // The standard `process_*` metrics, read at each scrape.
        registry.register_collector(Box::new(crate::process_metrics::Process::new()));
        metrics.every_series_at_zero();
        Metrics { registry, ..metrics }
    }

    /// Creates every labelled series, at 0: an alert on `increase(...)`
    /// sees the first event, and a dashboard shows 0, not "no data".
    fn every_series_at_zero(&self) {
        for &reason in TurnedAway::ALL {
            let _ = self.turned_away.get_or_create(&TurnedAwayLabels { reason });
        }
        for &reason in Closed::ALL {
            let _ = self.closed.get_or_create(&ClosedLabels { reason });
        }
        for &kind in Failure::ALL {
            let _ = self.guest_failures.get_or_create(&FailureLabels { kind });
        }
        for &outcome in SwapOutcome::ALL {
            let _ = self.swaps.get_or_create(&SwapLabels { outcome });
        }
        for &outcome in DrainOutcome::ALL {
            let _ = self.drains.get_or_create(&DrainLabels { outcome });
        }
        for &kind in LogLines::ALL {
            let _ = self.log_lines_suppressed.get_or_create(&LogKind { kind });
        }
    }

    /// What clients do, and what the host does to them.
    fn register_clients(&self, r: &mut Registry) {
        r.register(
            "connections_open",
            "Client connections open now",
            self.connections_open.clone(),
        );
        r.register(
            "connections_max",
            "The most client connections open at once (--max-connections)",
            self.connections_max.clone(),
        );
        r.register(
            "connections_accepted",
            "Clients handed to a guest",
            self.connections_accepted.clone(),
        );
        r.register(
            "clients_turned_away",
            "Clients reset before a guest saw them, by reason",
            self.turned_away.clone(),
        );
        r.register(
            "clients_closed",
            "Clients the host closed on its own, by reason",
            self.closed.clone(),
        );
        r.register("received_bytes", "Bytes guests read from clients", self.received_bytes.clone());
        r.register("sent_bytes", "Bytes sent to clients", self.sent_bytes.clone());
    }

    /// What the guests do: instances, swaps, drains, memory, CPU.
    fn register_guests(&self, r: &mut Registry) {
        r.register("guest_starts", "Guest instances started", self.guest_starts.clone());
        r.register(
            "guest_restarts",
            "Restarts after a failure (--restart)",
            self.guest_restarts.clone(),
        );
        r.register(
            "guest_failures",
            "Guest instances that failed, by kind",
            self.guest_failures.clone(),
        );
        r.register("swaps", "Swaps (SIGHUP), by outcome", self.swaps.clone());
        r.register("drains", "Drains of old instances, by outcome", self.drains.clone());
        r.register(
            "guest_memory_bytes",
            "Linear memory of every guest instance alive (serving, starting, draining)",
            self.guest_memory.clone(),
        );
        r.register(
            "guest_memory_limit_bytes",
            "One instance's limit (--max-memory)",
            self.guest_memory_limit.clone(),
        );
        r.register(
            "guest_memory_total_limit_bytes",
            "The limit on guest_memory_bytes: every instance's together (the ledger's total)",
            self.guest_memory_total_limit.clone(),
        );
        r.register(
            "guest_info",
            "1 for the guest that new clients get: its name and its component's SHA-256",
            self.guest_info.clone(),
        );
        r.register(
            "guest_cpu_seconds",
            "Compute time the guests used",
            self.guest_cpu_seconds.clone(),
        );
        r.register(
            "guest_cpu_budget_seconds",
            "Each instance's CPU budget (--cpu-budget; 0: none)",
            self.guest_cpu_budget.clone(),
        );
    }

    /// The host's own: its log, readiness, what it is.
    fn register_host(&self, r: &mut Registry) {
        r.register(
            "log_lines_suppressed",
            "Log lines left out by the rate limit, by kind",
            self.log_lines_suppressed.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines (and guests' stdout lines) dropped because their reader was too slow",
            self.log_lines_dropped.clone(),
        );
        r.register("ready", "1 while a guest serves every granted address", self.ready.clone());
        // An "info" metric in the common way, a gauge of 1 with the labels
        // (the classic text format, which promtool reads, has no info type).
        let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        let labels = vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("wasmtime_version", crate::wasi_version::WASMTIME_VERSION),
            ("wasi_version", crate::wasi_version::WASI_VERSION),
        ];
        build.get_or_create(&labels).set(1);
        r.register("build_info", "The host's version, and those it implements", build);
    }

    /// The text exposition format (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One more client turned away.
pub fn turned_away(reason: TurnedAway) {
    METRICS.turned_away.get_or_create(&TurnedAwayLabels { reason }).inc();
}

/// One more client closed by the host on its own.
pub fn closed(reason: Closed) {
    METRICS.closed.get_or_create(&ClosedLabels { reason }).inc();
}

/// One more guest instance failed.
pub fn guest_failed(kind: Failure) {
    METRICS.guest_failures.get_or_create(&FailureLabels { kind }).inc();
}

pub fn swapped(outcome: SwapOutcome) {
    METRICS.swaps.get_or_create(&SwapLabels { outcome }).inc();
}

pub fn drained(outcome: DrainOutcome) {
    METRICS.drains.get_or_create(&DrainLabels { outcome }).inc();
}

/// Log lines of one kind the rate limit left out.
pub fn suppressed(kind: LogLines, count: u64) {
    METRICS.log_lines_suppressed.get_or_create(&LogKind { kind }).inc_by(count);
}

/// Brings the dropped lines' counter up to the outputs' count (at a scrape).
pub fn count_dropped_lines() {
    static SYNC: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SYNC.lock().unwrap_or_else(|e| e.into_inner());
    let (now, counted) = (crate::output::dropped_lines(), METRICS.log_lines_dropped.get());
    METRICS.log_lines_dropped.inc_by(now.saturating_sub(counted));
}

/// `guest` (with its component's `digest`) now serves new clients.
pub fn serving(guest: &str, digest: &str) {
    let info = GuestInfo { guest: guest.to_string(), digest: format!("sha256:{digest}") };
    let family = &METRICS.guest_info;
    if family.get(&info).is_some() {
        return;
    }
    family.clear();
    family.get_or_create(&info).set(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_exposition() {
        turned_away(TurnedAway::Cap);
        let text = METRICS.encode();
        for name in [
            "wasi_tcp_host_connections_open",
            "wasi_tcp_host_clients_turned_away_total{reason=\"cap\"} 1",
            "wasi_tcp_host_clients_turned_away_total{reason=\"not_allowed\"} 0",
            "wasi_tcp_host_swaps_total{outcome=\"failed\"} 0",
            "wasi_tcp_host_log_lines_suppressed_total{kind=\"connect_denied\"} 0",
            "wasi_tcp_host_log_lines_dropped_total 0",
            "wasi_tcp_host_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} is missing:\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in ["process_open_fds ", "process_max_fds ", "process_resident_memory_bytes "] {
            assert!(text.contains(&format!("\n{name}")), "{name} is missing:\n{text}");
        }
    }

    #[test]
    fn the_guest_info_names_only_the_guest_serving() {
        serving("a.wasm", "aa");
        serving("b.wasm", "bb");
        let text = METRICS.encode();
        assert!(text.contains("wasi_tcp_host_guest_info{guest=\"b.wasm\",digest=\"sha256:bb\"} 1"));
        assert!(!text.contains("a.wasm"), "{text}");
    }
}
