//! The standard `process_*` metrics every Prometheus client library
//! exports, under their usual names, so that the dashboards and alerts
//! written for them work here too: start time, CPU, resident and virtual
//! memory, threads, open descriptors and their limit. Read from `/proc` at
//! each scrape (Linux); elsewhere only the start time and the limit.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the process started, in seconds since the Unix epoch (taken when
/// the metrics are first made, at start-up).
static STARTED: LazyLock<f64> = LazyLock::new(|| {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64())
});

#[derive(Debug)]
pub struct Process;

impl Process {
    pub fn new() -> Process {
        LazyLock::force(&STARTED);
        Process
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: f64| {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            *STARTED,
        )?;
        if let Some(max) = max_fds() {
            gauge("process_max_fds", "The most open file descriptors (the soft limit)", max)?;
        }
        let Some(now) = linux::read() else { return Ok(()) };
        gauge("process_open_fds", "Open file descriptors", now.open_fds)?;
        gauge("process_resident_memory_bytes", "Resident memory", now.resident_bytes)?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory (address space reserved)",
            now.virtual_bytes,
        )?;
        gauge("process_threads", "Threads", now.threads)?;
        let cpu = ConstCounter::new(now.cpu_seconds);
        let help = "User and system CPU time spent";
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            help,
            None,
            cpu.metric_type(),
        )?)
    }
}

#[cfg(unix)]
fn max_fds() -> Option<f64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit`, or fails.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur as f64)
}

#[cfg(not(unix))]
fn max_fds() -> Option<f64> {
    None
}

/// One reading of `/proc/self`.
struct Now {
    open_fds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    threads: f64,
    cpu_seconds: f64,
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Now;

    pub(super) fn read() -> Option<Now> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command's name, in parentheses (it may hold spaces):
        // field 3 (state) on; see proc_pid_stat(5).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count().saturating_sub(1);
        Some(Now {
            // (Less the descriptor that read the directory.)
            open_fds: open_fds as f64,
            cpu_seconds: (field(14)? + field(15)?) / ticks as f64,
            threads: field(20)?,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page as f64,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    pub(super) fn read() -> Option<super::Now> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_reading_of_this_process_is_plausible() {
        let now = linux::read().expect("/proc/self");
        assert!(now.open_fds >= 3.0, "stdin, stdout, stderr at least");
        assert!(now.resident_bytes > 1e6 && now.virtual_bytes >= now.resident_bytes);
        assert!(now.threads >= 1.0 && now.cpu_seconds >= 0.0);
    }
}
