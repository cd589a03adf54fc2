//! What the host counts for its operators, in Prometheus' terms
//! (`--metrics ADDR:PORT` serves them, `observe.rs`). Counted always,
//! whether anyone scrapes or not: each is an atomic, so counting is cheap.
//!
//! Every name starts with `wasi_tcp_host_`; counters end in `_total`.

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

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(match self { $($name::$variant => $text,)* })
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
    pub kind: String,
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
    pub guest_memory_limit: Gauge<u64, AtomicU64>,
    /// Compute time the guests used (in epoch ticks of 10 ms), in all.
    pub guest_cpu_seconds: Counter<f64, AtomicU64>,
    pub guest_cpu_budget: Gauge<f64, AtomicU64>,
    pub log_lines_suppressed: Family<LogKind, Counter>,
    pub log_lines_dropped: Gauge<u64, AtomicU64>,
    pub ready: Gauge,
    registry: Registry,
}

/// The host's metrics, one set for the process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasi_tcp_host");
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
            guest_cpu_seconds: Counter::default(),
            guest_cpu_budget: Gauge::default(),
            log_lines_suppressed: Family::default(),
            log_lines_dropped: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        metrics.register_clients(&mut registry);
        metrics.register_guests(&mut registry);
        metrics.register_host(&mut registry);
        Metrics { registry, ..metrics }
    }

    /// What clients do, and what the host does to them.
    fn register_clients(&self, r: &mut Registry) {
        r.register(
            "connections_open",
            "Client connections open now",
            self.connections_open.clone(),
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
            "Its limit (--max-memory)",
            self.guest_memory_limit.clone(),
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
            "Log lines dropped because the log's reader was too slow",
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
pub fn suppressed(kind: &str, count: u64) {
    METRICS.log_lines_suppressed.get_or_create(&LogKind { kind: kind.to_string() }).inc_by(count);
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
            "wasi_tcp_host_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} is missing:\n{text}");
        }
    }
}
