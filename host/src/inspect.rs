//! `wasi-tcp-host inspect GUEST.wasm`: what a component imports and exports, which
//! grants it could use, and whether this host can run it, read from the
//! file without compiling or running anything.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use wasmparser::{Parser, Payload};

/// The interfaces this host provides: all of `wasi:cli/command` at 0.2.x.
const PROVIDED: &[(&str, &[&str])] = &[
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"]),
    ("wasi:filesystem", &["types", "preopens"]),
    ("wasi:io", &["error", "poll", "streams"]),
    ("wasi:random", &["random", "insecure", "insecure-seed"]),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
    ),
];

/// What each group of imports lets a guest do here, and what grants it.
const CAPABILITIES: &[(&str, &[&str], &str)] = &[
    (
        "TCP",
        &["wasi:sockets/tcp", "wasi:sockets/tcp-create-socket"],
        "listen on the --listen addresses only (default 0.0.0.0:9000); outbound only with --allow-connect; clients can be limited with --allow-client",
    ),
    ("UDP", &["wasi:sockets/udp", "wasi:sockets/udp-create-socket"], "denied unless --allow-udp"),
    ("name lookup", &["wasi:sockets/ip-name-lookup"], "denied unless --allow-dns"),
    ("files", &["wasi:filesystem/types", "wasi:filesystem/preopens"], "no directory unless --dir"),
    (
        "environment variables",
        &["wasi:cli/environment"],
        "LISTEN_ADDR (with --per-client: REMOTE_ADDR and REMOTE_PORT), plus each --env; never the host's own",
    ),
    (
        "standard streams",
        &["wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr"],
        "stdout and stderr shown in the host's output, stdin empty; with --per-client, stdin and stdout are the client's connection",
    ),
    ("clocks", &["wasi:clocks/monotonic-clock", "wasi:clocks/wall-clock"], "always available"),
    ("random numbers", &["wasi:random/random", "wasi:random/insecure", "wasi:random/insecure-seed"], "always available"),
];

#[derive(Serialize)]
pub struct Report {
    file: String,
    /// Imported and exported interfaces, grouped by package (`wasi:sockets@0.2.12`).
    imports: BTreeMap<String, Vec<String>>,
    exports: BTreeMap<String, Vec<String>>,
    capabilities: Vec<Capability>,
    /// Imports this host does not provide.
    missing: Vec<String>,
    exports_run: bool,
    runnable: bool,
    /// It can serve one instance per client (`--per-client`): it runs, and
    /// does not open TCP sockets of its own (it would try to listen).
    per_client: bool,
}

#[derive(Serialize)]
struct Capability {
    name: &'static str,
    grant: &'static str,
}

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let report = read(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::guest::check_is_component(path, &bytes)?;
    let (imports, exports) = top_level_names(&bytes)
        .with_context(|| format!("{} is not a valid component", path.display()))?;
    let missing: Vec<String> = imports.iter().filter(|name| !provided(name)).cloned().collect();
    let exports_run = exports.iter().any(|name| is_run(name));
    let capabilities = CAPABILITIES
        .iter()
        .filter(|(_, interfaces, _)| {
            imports.iter().any(|name| interfaces.contains(&unversioned(name)))
        })
        .map(|(name, _, grant)| Capability { name, grant })
        .collect();
    let tcp = serves_clients_itself(imports.iter().map(String::as_str));
    let runnable = missing.is_empty() && exports_run;
    Ok(Report {
        file: path.display().to_string(),
        imports: by_package(&imports),
        exports: by_package(&exports),
        capabilities,
        runnable,
        per_client: runnable && !tcp,
        missing,
        exports_run,
    })
}

/// Whether an export is the `wasi:cli/run` the host runs.
pub fn is_run(export: &str) -> bool {
    export.starts_with("wasi:cli/run@0.2.")
}

/// The names the component itself imports and exports (not those of the
/// modules and components nested inside it).
pub fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    let (mut imports, mut exports, mut depth) = (Vec::new(), Vec::new(), 0usize);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    imports.push(import?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Whether a component with these imports opens TCP sockets of its own,
/// and so serves its clients itself: not one for `--per-client`.
pub fn serves_clients_itself<'a>(mut imports: impl Iterator<Item = &'a str>) -> bool {
    imports.any(|name| unversioned(name) == "wasi:sockets/tcp-create-socket")
}

/// `wasi:sockets/tcp@0.2.12` -> `wasi:sockets/tcp`.
fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

fn provided(name: &str) -> bool {
    let (interface, version) = name.split_once('@').unwrap_or((name, ""));
    let Some((package, iface)) = interface.split_once('/') else { return false };
    version.starts_with("0.2.")
        && PROVIDED.iter().any(|(p, interfaces)| *p == package && interfaces.contains(&iface))
}

/// `wasi:sockets/tcp@0.2.12` grouped as `wasi:sockets@0.2.12` -> `tcp`.
fn by_package(names: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        let (interface, version) = name
            .split_once('@')
            .map_or((name.as_str(), String::new()), |(i, v)| (i, format!("@{v}")));
        let (package, iface) = interface.split_once('/').unwrap_or((interface, ""));
        groups.entry(format!("{package}{version}")).or_default().push(iface.to_string());
    }
    groups
}

impl Report {
    fn text(&self) -> String {
        let mut out = format!("{}: a WebAssembly component\n", self.file);
        for (title, groups) in [("imports", &self.imports), ("exports", &self.exports)] {
            out += &format!("\n{title}:\n");
            if groups.is_empty() {
                out += "  (none)\n";
            }
            for (package, interfaces) in groups {
                out += &format!("  {package}: {}\n", interfaces.join(", "));
            }
        }
        out += "\nwhat it could use here, and what grants it:\n";
        if self.capabilities.is_empty() {
            out += "  nothing beyond computing\n";
        }
        for capability in &self.capabilities {
            out += &format!("  {:<22} {}\n", capability.name, capability.grant);
        }
        out += "\ncan this host run it: ";
        out += &match (self.runnable, self.exports_run) {
            (true, _) => "yes".to_string(),
            (false, false) if self.missing.is_empty() => {
                "no: it does not export wasi:cli/run".to_string()
            }
            (false, exports_run) => {
                let mut why = format!("no: this host does not provide {}", self.missing.join(", "));
                if !exports_run {
                    why += "; and it does not export wasi:cli/run";
                }
                why
            }
        };
        out += "\none instance per client (--per-client): ";
        out += match (self.per_client, self.runnable) {
            (true, _) => "yes: each client's connection is its stdin and stdout",
            (false, true) => {
                "no: it opens TCP sockets, so it serves clients itself; run it without --per-client"
            }
            (false, false) => "no: this host cannot run it",
        };
        out + "\n"
    }
}
