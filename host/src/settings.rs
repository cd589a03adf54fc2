//! Everything the operator decided, from the command line and an optional
//! policy file, combined one way:
//!
//! - lists (`listen`, `allow-connect`, `allow-client`, `env`, `dir`): the
//!   file's entries, then the command line's (an `env` key given on the
//!   command line replaces the file's);
//! - switches (`allow-udp`, `allow-dns`, `nagle`): on if either turns them on;
//! - single values (`max-memory`, `max-connections`, `cpu-budget`,
//!   `restart`): the command line over the file, the file over the default.
//!
//! An unknown key in the file is an error, never ignored.

use crate::cli::Args;
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
/// Descriptors the host keeps for itself under the process's open-file limit.
const HOST_DESCRIPTORS: usize = 64;

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
    /// `--trace` (calls) or `--trace-data` (calls and bytes).
    pub trace: Option<TraceDetail>,
    /// Where compiled guests are kept; `None` with `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    /// `--nagle`: leave TCP_NODELAY off on the guest's listeners.
    pub nagle: bool,
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
    pub cpu_budget: Option<Duration>,
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

/// The policy file: the same names as the command-line options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyFile {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    #[serde(default)]
    allow_connect: Vec<NetRule>,
    #[serde(default)]
    allow_client: Vec<IpNet>,
    #[serde(default)]
    allow_udp: bool,
    #[serde(default)]
    allow_dns: bool,
    #[serde(default)]
    nagle: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dir: Vec<DirGrant>,
    max_memory: Option<Size>,
    max_connections: Option<usize>,
    #[serde(default, with = "duration_text")]
    cpu_budget: Option<Duration>,
    restart: Option<Restart>,
}

impl Settings {
    pub fn from_args(args: Args) -> Result<Settings> {
        let file = match &args.policy {
            Some(path) => read_policy(path)?,
            None => PolicyFile::default(),
        };
        let mut listen = file.listen;
        listen.extend(args.listen);
        if listen.is_empty() {
            listen.push(DEFAULT_LISTEN.parse()?);
        }
        let mut env = file.env;
        env.extend(args.env);
        let mut dirs = file.dir;
        dirs.extend(args.dir);
        for dir in &dirs {
            if !dir.host.is_dir() {
                bail!(
                    "cannot grant --dir {}: it is not a directory on this machine",
                    dir.host.display()
                );
            }
        }
        let grants = Grants {
            listen,
            connect: [file.allow_connect, args.allow_connect].concat(),
            clients: [file.allow_client, args.allow_client].concat(),
            udp: file.allow_udp || args.allow_udp,
            dns: file.allow_dns || args.allow_dns,
        };
        let limits = Limits {
            max_memory: args.max_memory.or(file.max_memory).unwrap_or(DEFAULT_MAX_MEMORY),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or_else(default_max_connections),
            cpu_budget: args.cpu_budget.map(Into::into).or(file.cpu_budget),
        };
        Ok(Settings {
            guest: args.guest,
            guest_args: args.guest_args,
            grants,
            env: env.into_iter().collect(),
            dirs,
            limits,
            restart: args.restart.or(file.restart).unwrap_or_default(),
            trace: match (args.trace, args.trace_data) {
                (_, true) => Some(TraceDetail::Data),
                (true, false) => Some(TraceDetail::Calls),
                (false, false) => None,
            },
            cache_dir: match args.no_cache {
                true => None,
                false => args.cache_dir.or_else(crate::cache::default_dir),
            },
            nagle: file.nagle || args.nagle,
        })
    }

    /// The guest's environment: LISTEN_ADDR (the granted addresses), then
    /// what was granted with `env`. An explicit `LISTEN_ADDR` replaces the
    /// default: it changes what the guest is told, never what it may do.
    pub fn guest_env(&self) -> Vec<(String, String)> {
        let listen: Vec<String> = self.grants.listen.iter().map(ToString::to_string).collect();
        let mut env = vec![("LISTEN_ADDR".to_string(), listen.join(","))];
        for (key, value) in &self.env {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(existing) => existing.1 = value.clone(),
                None => env.push((key.clone(), value.clone())),
            }
        }
        env
    }
}

/// 1024, or fewer when the process may not open that many files: the cap
/// must bite before the process runs out of descriptors. (The host never
/// raises its own limit; an operator who wants more raises it with ulimit.)
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return DEFAULT_MAX_CONNECTIONS;
    }
    let available =
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX).saturating_sub(HOST_DESCRIPTORS);
    DEFAULT_MAX_CONNECTIONS.min(available.max(1))
}

fn read_policy(path: &Path) -> Result<PolicyFile> {
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
    use clap::Parser;

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
        Settings::from_args(Args::try_parse_from(argv)?)
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
        assert_eq!(s.guest_env(), vec![("LISTEN_ADDR".to_string(), DEFAULT_LISTEN.to_string())]);
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
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.guest_env()[0].1, "0.0.0.0:9000,[::]:9000");
    }

    #[test]
    fn an_unknown_key_is_an_error_with_its_line() {
        let e = settings(Some("listen = []\nallow-everything = true\n"), &[]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("line 2") && text.contains("allow-everything"), "{text}");
    }

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<Size>(), Ok(Size(64 << 20)));
        assert_eq!("512 KiB".parse::<Size>(), Ok(Size(512 << 10)));
        assert_eq!("1000".parse::<Size>(), Ok(Size(1000)));
        assert!("64 parsecs".parse::<Size>().is_err());
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
    }
}
