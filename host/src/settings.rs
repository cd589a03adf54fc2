//! Everything the operator decided, from the command line and an optional
//! policy file, combined one way:
//!
//! - lists (`listen`, `allow-connect`, `allow-client`, `env`, `dir`): the
//!   file's entries, then the command line's (an `env` key given on the
//!   command line replaces the file's);
//! - switches (`no-listen`, `allow-udp`, `allow-dns`, `nagle`,
//!   `per-client`): on if either turns them on (`no-listen` with a `listen` address anywhere is an error);
//! - single values (`max-memory`, `max-connections`, `max-files`,
//!   `cpu-budget`, `idle-timeout`, `send-timeout`, `drain-timeout`,
//!   `restart`, `metrics`, `threads`): the
//!   command line over the file, the file over the default.
//!
//! An unknown key in the file is an error, never ignored.

use crate::ledger::Terms;
use crate::policy::{DirGrant, Grants, NetRule};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9000";
pub const DEFAULT_MAX_MEMORY: Size = Size(128 << 20);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Files and directories open at once, with `--dir` grants.
pub const DEFAULT_MAX_FILES: usize = 64;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the host runs, and with what.
#[derive(Debug)]
pub struct Settings {
    pub guest: Option<PathBuf>,
    pub guest_args: Vec<String>,
    pub grants: Grants,
    pub env: Vec<(String, String)>,
    pub dirs: Vec<DirGrant>,
    pub limits: Limits,
    pub restart: Restart,
    /// How long an old instance may serve its clients after a swap.
    pub drain_timeout: Duration,
    /// `--trace` (calls) or `--trace-data` (calls and bytes).
    pub trace: Option<TraceDetail>,
    /// Where compiled guests are kept; `None` with `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    /// `--nagle`: leave TCP_NODELAY off on the guest's connections.
    pub nagle: bool,
    /// `--watch`: swap the guest when its file is replaced (`watch.rs`).
    pub watch: bool,
    /// `--metrics ADDR:PORT`: where the host serves its metrics and health.
    pub metrics: Option<SocketAddr>,
    /// `--per-client`: one guest instance per client, the connection its
    /// stdin and stdout (`per_client/`).
    pub per_client: bool,
    /// `--threads N`: the async runtime's threads in `--per-client` mode.
    pub threads: usize,
    /// Where these settings came from, to read them again (SIGHUP).
    pub source: Option<Source>,
}

/// The policy file and the command line a `Settings` was made from.
#[derive(Debug, Clone)]
pub struct Source {
    pub policy: Option<PathBuf>,
    pub flags: Choices,
    pub run: Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceDetail {
    Calls,
    Data,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_memory: Size,
    pub max_connections: usize,
    /// Files and directories the guests hold open at once, the `--dir`
    /// grants' directories included (0 without any).
    pub max_files: usize,
    pub cpu_budget: Option<Duration>,
    /// Close a client connection with nothing received or sent for this long.
    pub idle_timeout: Option<Duration>,
    /// How long the host finishes a send on its own once the guest let go.
    pub send_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Run the guest once.
    #[default]
    Never,
    /// Start it again after a trap or an error exit, with backoff.
    OnFailure,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the operator chose, from the policy file or from the command line:
/// the same names in both places.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Choices {
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub no_listen: bool,
    #[serde(default)]
    pub allow_connect: Vec<NetRule>,
    #[serde(default)]
    pub allow_client: Vec<IpNet>,
    #[serde(default)]
    pub allow_udp: bool,
    #[serde(default)]
    pub allow_dns: bool,
    #[serde(default)]
    pub nagle: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub dir: Vec<DirGrant>,
    pub max_memory: Option<Size>,
    pub max_connections: Option<usize>,
    pub max_files: Option<usize>,
    #[serde(default, with = "duration_text")]
    pub cpu_budget: Option<Duration>,
    #[serde(default, with = "duration_text")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "duration_text")]
    pub send_timeout: Option<Duration>,
    #[serde(default, with = "duration_text")]
    pub drain_timeout: Option<Duration>,
    pub restart: Option<Restart>,
    pub metrics: Option<SocketAddr>,
    #[serde(default)]
    pub per_client: bool,
    pub threads: Option<usize>,
}

/// What runs, besides the grants and limits.
#[derive(Debug, Default, Clone)]
pub struct Run {
    pub guest: Option<PathBuf>,
    pub guest_args: Vec<String>,
    pub trace: Option<TraceDetail>,
    pub cache_dir: Option<PathBuf>,
    /// `--watch`: swap the guest when its file is replaced.
    pub watch: bool,
    /// Listening sockets a service manager passed (socket activation):
    /// with no `listen` chosen, their addresses are the grants.
    pub handed: Vec<SocketAddr>,
}

impl Settings {
    /// The policy file's choices combined with the command line's (`flags`),
    /// the one way the module documentation gives.
    pub fn new(run: Run, file: Choices, flags: Choices) -> Result<Settings> {
        if run.watch && run.guest.is_none() {
            bail!("--watch watches a guest file: name one (the built-in guest never changes)");
        }
        let per_client = file.per_client || flags.per_client;
        let threads = threads(&file, &flags, per_client)?;
        let listen = listen_grants(
            &run,
            file.listen.clone(),
            flags.listen.clone(),
            file.no_listen || flags.no_listen,
        )?;
        let dns = file.allow_dns || flags.allow_dns;
        let metrics = flags.metrics.or(file.metrics);
        let dirs = [file.dir.clone(), flags.dir.clone()].concat();
        let outside_sockets = Terms {
            max_memory: 0,
            max_connections: 0,
            max_files: max_files(&file, &flags, !dirs.is_empty()),
            listen_addresses: listen.len(),
            metrics: metrics.is_some(),
            dns,
            per_client: per_client.then_some(threads),
        };
        let limits = limits(&file, &flags, &outside_sockets)?;
        let mut env = file.env;
        env.extend(flags.env);
        for dir in &dirs {
            if !dir.host.is_dir() {
                bail!(
                    "cannot grant --dir {}: it is not a directory on this machine",
                    dir.host.display()
                );
            }
        }
        if per_client && listen.is_empty() {
            bail!(
                "`per-client` serves the clients of a listen address, but `no-listen` grants none"
            );
        }
        if let Some(own) = metrics {
            refuse_metrics_where_the_guest_listens(own, &listen)?;
        }
        let grants = Grants {
            listen,
            connect: [file.allow_connect, flags.allow_connect].concat(),
            clients: [file.allow_client, flags.allow_client].concat(),
            udp: file.allow_udp || flags.allow_udp,
            dns,
            host_only: metrics,
        };
        Ok(Settings {
            guest: run.guest,
            guest_args: run.guest_args,
            grants,
            env: env.into_iter().collect(),
            dirs,
            limits,
            restart: flags.restart.or(file.restart).unwrap_or_default(),
            drain_timeout: flags
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            trace: run.trace,
            cache_dir: run.cache_dir,
            nagle: file.nagle || flags.nagle,
            watch: run.watch,
            metrics,
            per_client,
            threads,
            source: None,
        })
    }

    /// The settings as the policy file says now (with the same command
    /// line): what SIGHUP applies to the next guest instance. Fails, with
    /// the reason, if the file is wrong or asks for what only a restart
    /// can change: the listen addresses, the socket cap, the metrics
    /// address.
    pub fn reloaded(&self) -> Result<Settings> {
        let Some(source) = &self.source else { return Ok(self.clone_for_reload(None)) };
        let file = match &source.policy {
            Some(path) => read_policy(path)?,
            None => Choices::default(),
        };
        let mut new = Settings::new(source.run.clone(), file, source.flags.clone())?;
        let unchanged = |what: &str, same: bool| match same {
            true => Ok(()),
            false => Err(anyhow::anyhow!("the policy file changes {what}, which needs a restart")),
        };
        unchanged("the listen addresses", new.grants.listen == self.grants.listen)?;
        let cap = new.limits.max_connections == self.limits.max_connections;
        unchanged("max-connections (one socket cap for the whole host)", cap)?;
        let files = new.limits.max_files == self.limits.max_files;
        unchanged("max-files (with dir grants, one cap for the whole host)", files)?;
        unchanged(
            "allow-dns (its lookups are counted in the host's descriptors)",
            new.grants.dns == self.grants.dns,
        )?;
        unchanged("the metrics address", new.metrics == self.metrics)?;
        unchanged("per-client", new.per_client == self.per_client)?;
        unchanged("threads", new.threads == self.threads)?;
        new.source = Some(source.clone());
        new.grants.host_only = self.grants.host_only;
        Ok(new)
    }

    /// The metrics listener is bound at `addr`: no grant reaches it, on
    /// the port the system picked too (`--metrics 127.0.0.1:0`).
    pub fn metrics_bound_at(&mut self, addr: SocketAddr) {
        self.grants.host_only = Some(addr);
    }

    /// The policy's numbers, for the ledger's totals.
    pub fn terms(&self) -> Terms {
        Terms {
            max_memory: self.limits.max_memory.0,
            max_connections: self.limits.max_connections,
            max_files: self.limits.max_files,
            listen_addresses: self.grants.listen.len(),
            metrics: self.metrics.is_some(),
            dns: self.grants.dns,
            per_client: self.per_client.then_some(self.threads),
        }
    }

    /// What an instance per client (`--per-client`) is granted: the same,
    /// less the listen addresses, which the host listens on itself.
    pub fn for_each_client(&self) -> Settings {
        let mut settings = self.clone_for_reload(self.source.clone());
        settings.grants.listen.clear();
        settings
    }

    /// A copy, read again from `source` on SIGHUP (None: nothing to read
    /// again, as for settings a test made).
    fn clone_for_reload(&self, source: Option<Source>) -> Settings {
        Settings {
            guest: self.guest.clone(),
            guest_args: self.guest_args.clone(),
            grants: self.grants.clone(),
            env: self.env.clone(),
            dirs: self.dirs.clone(),
            limits: self.limits,
            restart: self.restart,
            drain_timeout: self.drain_timeout,
            trace: self.trace,
            cache_dir: self.cache_dir.clone(),
            watch: self.watch,
            nagle: self.nagle,
            metrics: self.metrics,
            per_client: self.per_client,
            threads: self.threads,
            source,
        }
    }

    /// The guest's environment: LISTEN_ADDR (the granted addresses, if any), then
    /// what was granted with `env`. An explicit `LISTEN_ADDR` replaces the
    /// default: it changes what the guest is told, never what it may do.
    pub fn guest_env(&self) -> Vec<(String, String)> {
        let listen: Vec<String> = self.grants.listen.iter().map(ToString::to_string).collect();
        let mut env = Vec::new();
        if !listen.is_empty() {
            env.push(("LISTEN_ADDR".to_string(), listen.join(",")));
        }
        for (key, value) in &self.env {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(existing) => existing.1 = value.clone(),
                None => env.push((key.clone(), value.clone())),
            }
        }
        env
    }
}

/// The addresses the guest may listen on: those chosen; else those of the
/// sockets a service manager handed over; else the default; none at all
/// with `no-listen`.
fn listen_grants(
    run: &Run,
    file: Vec<SocketAddr>,
    flags: Vec<SocketAddr>,
    no_listen: bool,
) -> Result<Vec<SocketAddr>> {
    let chosen = [file, flags].concat();
    if no_listen {
        if let Some(addr) = chosen.first() {
            bail!("`no-listen` grants no listen address, but {addr} is given too: choose one");
        }
        if let Some(addr) = run.handed.first() {
            bail!("`no-listen` grants no listen address, but a service manager handed over a socket on {addr}");
        }
        return Ok(chosen);
    }
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    if !run.handed.is_empty() {
        return Ok(run.handed.clone());
    }
    Ok(vec![DEFAULT_LISTEN.parse()?])
}

/// 1024, or fewer when the process may not open that many descriptors
/// besides the `others` the policy needs (the host's own, its listeners,
/// files, metrics connections, lookups): the cap must bite before the
/// process runs out of descriptors.
fn default_max_connections(others: usize) -> usize {
    let limit = open_file_limit().unwrap_or(usize::MAX);
    DEFAULT_MAX_CONNECTIONS.min(limit.saturating_sub(others).max(1))
}

/// The process's open-file limit (its soft limit), if it has one. Windows
/// has none for sockets (they are kernel handles, limited by memory), so
/// there the default cap is 1024.
#[cfg(windows)]
pub(crate) fn open_file_limit() -> Option<usize> {
    None
}

/// The process's open-file limit (its soft limit), if it has one.
#[cfg(unix)]
pub(crate) fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

/// Raises the soft open-file limit to the hard one, as nginx and Go do:
/// the soft limit is a default for programs that use `select`, which the
/// host does not. (macOS refuses an infinite soft limit: there it stops at
/// OPEN_MAX.) Call before the settings are made: the default socket cap
/// follows the limit.
#[cfg(unix)]
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = match cfg!(target_os = "macos") {
        true => limit.rlim_max.min(10240),
        false => limit.rlim_max,
    };
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit only reads `limit`; raising the soft limit up
        // to the hard one needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

#[cfg(windows)]
pub fn raise_open_file_limit() {}

/// The runtime's threads, flag over file over the number of cores.
/// (One guest instance runs on one thread, so only `per-client` uses more.)
fn threads(file: &Choices, flags: &Choices, per_client: bool) -> Result<usize> {
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    match flags.threads.or(file.threads) {
        Some(_) if !per_client => {
            bail!("`threads` applies to `per-client` only: one guest instance runs on one thread")
        }
        Some(0) => bail!("`threads` must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(cores()),
    }
}

/// Files and directories open at once: none without a `--dir` grant (there
/// is nothing to open), else flag over file over the default.
fn max_files(file: &Choices, flags: &Choices, dirs: bool) -> usize {
    match dirs {
        true => flags.max_files.or(file.max_files).unwrap_or(DEFAULT_MAX_FILES),
        false => 0,
    }
}

/// The limits, flag over file over default; `others` is the rest of the
/// policy, for the descriptors left for sockets.
fn limits(file: &Choices, flags: &Choices, others: &Terms) -> Result<Limits> {
    let limits = Limits {
        max_memory: flags.max_memory.or(file.max_memory).unwrap_or(DEFAULT_MAX_MEMORY),
        max_connections: flags
            .max_connections
            .or(file.max_connections)
            .unwrap_or_else(|| default_max_connections(others.descriptors_besides_sockets())),
        max_files: others.max_files,
        cpu_budget: flags.cpu_budget.or(file.cpu_budget),
        idle_timeout: flags.idle_timeout.or(file.idle_timeout),
        send_timeout: flags.send_timeout.or(file.send_timeout).unwrap_or(DEFAULT_SEND_TIMEOUT),
    };
    // Zero would close every client at once, or reset every connection a
    // guest closes with bytes still on their way.
    for (name, value) in [("idle", limits.idle_timeout), ("send", Some(limits.send_timeout))] {
        if value == Some(Duration::ZERO) {
            bail!("`{name}-timeout` must be longer than 0");
        }
    }
    Ok(limits)
}

/// The metrics address is the host's alone: never one the guest may
/// listen on. (Port 0 on either side: the system picks different ports.)
fn refuse_metrics_where_the_guest_listens(own: SocketAddr, listen: &[SocketAddr]) -> Result<()> {
    let overlaps = |grant: &&SocketAddr| {
        grant.port() == own.port()
            && own.port() != 0
            && (grant.ip() == own.ip() || grant.ip().is_unspecified() || own.ip().is_unspecified())
    };
    match listen.iter().find(overlaps) {
        Some(grant) => {
            bail!("--metrics {own} is where the guest listens too ({grant}): choose another port")
        }
        None => Ok(()),
    }
}

/// The descriptors this policy needs, against what the process may open:
/// an error (before anything is served) when they do not fit, naming what
/// needs them and what to change.
pub fn check_descriptors(terms: &Terms) -> Result<()> {
    let Some(limit) = open_file_limit() else { return Ok(()) };
    let needed = terms.descriptors();
    if needed <= limit {
        return Ok(());
    }
    let rows: Vec<String> = terms
        .descriptor_rows()
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| format!("{} {}", r.count, r.what))
        .collect();
    bail!(
        "this policy needs {needed} descriptors ({}), but the process may open {limit} (its \
         hard open-file limit); raise that limit (ulimit -Hn, LimitNOFILE=) or lower \
         --max-connections",
        rows.join(", ")
    )
}

/// Reads a policy file; an unknown key is an error with its line.
pub fn read_policy(path: &Path) -> Result<Choices> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines (it quotes the file); keep the gist.
        let message = e.message().to_string();
        let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
        match line {
            Some(line) => anyhow::anyhow!("{}, line {line}: {message}", path.display()),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })
}

/// A number of bytes: `65536`, `512KiB`, `64MiB`, `1GiB` (also KB, MB, GB
/// as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("`{text}` is not a size such as 64MiB"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(format!("`{text}`: unknown unit (use B, KiB, MiB or GiB)")),
        };
        number.checked_mul(scale).map(Size).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(text: String) -> Result<Size, String> {
        text.parse()
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}B"),
        }
    }
}

/// `cpu-budget = "30s"` in the policy file.
mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<Size>(), Ok(Size(64 << 20)));
        assert_eq!("512 KiB".parse::<Size>(), Ok(Size(512 << 10)));
        assert_eq!("1000".parse::<Size>(), Ok(Size(1000)));
        assert!("64 parsecs".parse::<Size>().is_err());
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
    }
}
