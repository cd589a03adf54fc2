//! The deployment files in `deploy/`: systemd units that verify clean and
//! rate as little exposed as docs/deploy.md says, and Kubernetes manifests
//! valid for the Kubernetes version it names.

use crate::support::HOST_BIN;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.33.0";

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// docs/deploy.md, the page that says how the deployment files are used
/// and what they were checked against.
fn deploy_page() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md"))
        .unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The version `systemd-analyze --version` says ("systemd 254 (...)").
pub fn systemd_version(analyze: &Path) -> Option<u32> {
    let output = Command::new(analyze).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `systemd-analyze verify` checks that ExecStart names an executable
/// that exists: the units are checked as shipped, but for that one path,
/// which points at the executable this build made.
pub fn the_systemd_units_verify_clean(analyze: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let at_this_build = |text: String| {
        assert!(text.contains("ExecStart=/usr/local/bin/wasi-tcp-host "), "{text}");
        text.replace("/usr/local/bin/wasi-tcp-host", HOST_BIN)
    };
    let service = std::fs::read_to_string(deploy("systemd/wasi-tcp-host.service")).unwrap();
    std::fs::write(dir.path().join("wasi-tcp-host.service"), at_this_build(service)).unwrap();
    for unit in ["wasi-tcp-host.socket", "wasi-tcp-host-failed@.service"] {
        std::fs::copy(deploy(&format!("systemd/{unit}")), dir.path().join(unit)).unwrap();
    }
    let verify = |dir: &Path| {
        let (ok, output) = run(Command::new(analyze)
            .arg("verify")
            .arg(dir.join("wasi-tcp-host.socket"))
            .arg(dir.join("wasi-tcp-host.service"))
            .arg(dir.join("wasi-tcp-host-failed@wasi-tcp-host.service.service")));
        assert!(ok && output.trim().is_empty(), "systemd-analyze verify:\n{output}");
    };
    verify(dir.path());
    // With the per-client drop-in beside the unit, as installed.
    let drop_ins = dir.path().join("wasi-tcp-host.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    let drop_in =
        std::fs::read_to_string(deploy("per-client/wasi-tcp-host.service.d/per-client.conf"))
            .unwrap();
    std::fs::write(drop_ins.join("per-client.conf"), at_this_build(drop_in)).unwrap();
    verify(dir.path());
}

pub fn the_service_is_exposed_no_more_than_the_docs_say_and_at_most_2(analyze: &Path) {
    let (ok, output) = run(Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(deploy("systemd/wasi-tcp-host.service")));
    assert!(ok, "{output}");
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{output}"));
    let level = line.split(": ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap();
    assert!(level.parse::<f64>().unwrap() <= 2.0, "{line}");
    let claim = format!("rates the service {level} ");
    assert!(deploy_page().contains(&claim), "docs/deploy.md should say {claim:?} ({line})");
}

/// The Kubernetes objects as `kubectl kustomize deploy/` renders them
/// (offline), and with the per-client component turned on (in a copy of
/// deploy/, the way `kustomize edit add component per-client` would):
/// valid against the named Kubernetes version's schemas, strictly; the
/// ConfigMap made from the policy file itself, named by its hash, and the
/// pods Guaranteed (requests equal to limits), spread over zones, with
/// the compiled-guest cache on a volume. (kubernetes-validate has no
/// schema for the Prometheus Operator's PodMonitor: it says so, and that
/// one is checked here by hand.)
pub fn the_kubernetes_objects_render_and_are_valid_for_the_named_version(
    validate: &Path,
    kubectl: &Path,
) {
    let copy = tempfile::tempdir().unwrap();
    let with_component = copy.path().join("deploy");
    let (ok, output) = run(Command::new("cp").arg("-r").arg(deploy("")).arg(&with_component));
    assert!(ok, "{output}");
    let kustomization = with_component.join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).unwrap();
    text += "components:\n  - per-client\n";
    std::fs::write(&kustomization, text).unwrap();
    let policy = std::fs::read_to_string(deploy("policy.toml")).unwrap();
    let per_client = std::fs::read_to_string(deploy("per-client/policy.toml")).unwrap();
    for (dir, policy, image) in [
        (deploy(""), &policy, "registry.example.com/wasi-tcp-host:0.1.0"),
        (with_component, &per_client, "registry.example.com/wasi-tcp-host-per-client:0.1.0"),
    ] {
        let (ok, rendered) = run(Command::new(kubectl).arg("kustomize").arg(&dir));
        assert!(ok, "kubectl kustomize {}:\n{rendered}", dir.display());
        let out = copy.path().join("rendered.yaml");
        std::fs::write(&out, &rendered).unwrap();
        let (ok, output) =
            run(Command::new(validate).args(["--strict", "-k", KUBERNETES]).arg(&out));
        assert!(ok, "{output}\n{rendered}");
        for kind in ["deployment", "service", "configmap", "networkpolicy", "poddisruptionbudget"] {
            assert!(output.contains(&format!("passed for resource {kind}/")), "{kind}:\n{output}");
        }
        assert!(output.contains("Couldn't find schema for kind PodMonitor"), "{output}");
        let podmonitor = rendered.split("---").find(|o| o.contains("kind: PodMonitor")).unwrap();
        for line in ["apiVersion: monitoring.coreos.com/v1", "path: /metrics", "port: metrics"] {
            assert!(podmonitor.contains(line), "{line}:\n{podmonitor}");
        }
        // The policy's very text, indented into the ConfigMap, which the
        // Deployment mounts under the name with its hash.
        let indented: String =
            policy.lines().map(|l| format!("    {l}\n").replace("    \n", "\n")).collect();
        assert!(
            rendered.contains(&indented),
            "the ConfigMap does not hold the policy:\n{rendered}"
        );
        let name =
            rendered.split("name: wasi-tcp-host-policy-").nth(1).unwrap().lines().next().unwrap();
        assert_eq!(
            rendered.matches(&format!("wasi-tcp-host-policy-{name}")).count(),
            2,
            "{rendered}"
        );
        for line in [
            &format!("image: {image}") as &str,
            "topologyKey: topology.kubernetes.io/zone",
            "mountPath: /var/cache",
            "value: /var/cache",
            "path: /healthz",
        ] {
            assert!(rendered.contains(line), "{line}:\n{rendered}");
        }
    }
    let short = KUBERNETES.trim_end_matches(".0");
    assert!(
        deploy_page().contains(&format!("Kubernetes {short}")),
        "docs/deploy.md should name Kubernetes {short}"
    );
}

/// The image from `deploy/Containerfile`, built with podman from the
/// static host (`cargo build --release --target x86_64-unknown-linux-musl
/// -p host`, which `.ci/run` does). `podman run` does not work on the
/// build machine, so its exported file system is run instead, the way its
/// configuration says: the entrypoint and command, as its user, chrooted,
/// in a network namespace of its own, with a client beside it.
pub fn the_container_image_holds_the_host_alone_and_serves(podman: &Path, host: &Path) {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Stripped, as the release profile strips it (the release build is
    // whole-program optimised, which CI leaves out for time: a dev build,
    // stripped, is bigger).
    let release = host.ends_with("release/wasi-tcp-host");
    let stripped = workspace.join("target/container/wasi-tcp-host");
    std::fs::create_dir_all(stripped.parent().unwrap()).unwrap();
    let (ok, output) = run(Command::new("strip").arg("-o").arg(&stripped).arg(host));
    assert!(ok, "strip:\n{output}");
    let tag = "localhost/wasi-tcp-host:test";
    let (ok, output) = run(Command::new(podman)
        .args(["build", "-q", "-f", "deploy/Containerfile", "-t", tag])
        .args(["--build-arg", "HOST=target/container/wasi-tcp-host", "."])
        .current_dir(&workspace));
    assert!(ok, "podman build:\n{output}");

    let inspect = |format: &str| {
        run(Command::new(podman).args(["image", "inspect", "--format", format, tag])).1
    };
    let size: u64 = inspect("{{.Size}}").trim().parse().unwrap();
    // CI's dev build has its dependencies unoptimised (.ci/run): bigger code.
    let most = if release { 25_000_000 } else { 60_000_000 };
    eprintln!(
        "the image is {:.1} MB (the host's {} build)",
        size as f64 / 1e6,
        match release {
            true => "release",
            false => "dev",
        }
    );
    assert!(size < most, "the image is {size} bytes");
    let config: serde_json::Value = serde_json::from_str(&inspect("{{json .Config}}")).unwrap();
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["StopSignal"], "SIGTERM", "{config}");

    let root = tempfile::tempdir().unwrap();
    let name = format!("wasi-tcp-host-test-{}", std::process::id());
    let (ok, output) = run(Command::new(podman).args(["create", "--name", &name, tag]));
    assert!(ok, "podman create:\n{output}");
    let tar = root.path().join("image.tar");
    let (exported, output) = run(Command::new(podman).args(["export", "-o"]).arg(&tar).arg(&name));
    run(Command::new(podman).args(["rm", &name]));
    assert!(exported, "podman export:\n{output}");
    let fs = root.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    assert!(run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&fs)).0);
    assert_eq!(files_in(&fs), ["etc/wasi-tcp-host/policy.toml", "wasi-tcp-host"], "nothing else");

    let argv: Vec<String> = ["Entrypoint", "Cmd"]
        .iter()
        .flat_map(|key| config[*key].as_array().cloned().unwrap_or_default())
        .map(|arg| arg.as_str().unwrap().to_string())
        .collect();
    // Loopback up before anything starts: the client then sees the server
    // refuse until it listens, never "network unreachable".
    let script = format!(
        "ip link set lo up || exit 1; chroot --userspec=65532:65532 \"$0\" {} & host=$!; python3 -c \"$1\"; status=$?; kill -TERM $host; wait $host; exit $status",
        argv.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
    );
    let mut cmd = Command::new("unshare");
    crate::support::prepare(&mut cmd).args(["--net", "sh", "-c", &script]).arg(&fs).arg(CLIENT);
    let (status, output) = crate::support::Host::start_command(&mut cmd).wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("echoed: from outside the image"), "{output}");
    assert!(output.contains("granted: listen on 0.0.0.0:9000"), "{output}");
}

/// Connects to the image's server (retrying while it starts) and echoes;
/// every wait bounded.
const CLIENT: &str = r#"
import os, socket, time
deadline = time.time() + 60
while True:
    try:
        s = socket.create_connection(("127.0.0.1", 9000), timeout=60); break
    except ConnectionRefusedError:
        if time.time() > deadline: raise
        time.sleep(0.05)
s.sendall(b"from outside the image")
got = b""
while len(got) < 22:
    more = s.recv(64)
    if not more: raise SystemExit("the server closed after %r" % got)
    got += more
# One write(), so that no line of the server's (the same pipe) lands inside it.
os.write(1, b"echoed: " + got + b"\n")
"#;

/// The statically linked host: a release build if there is one, else a
/// dev build (what CI builds, in a third of the time).
pub fn static_host() -> Option<PathBuf> {
    let target =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-musl");
    ["release", "debug"]
        .map(|profile| target.join(profile).join("wasi-tcp-host"))
        .into_iter()
        .find(|p| p.exists())
}

/// The regular files under `dir`, as relative paths, sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => todo.push(path),
                false => files.push(path.strip_prefix(dir).unwrap().display().to_string()),
            }
        }
    }
    files.sort();
    files
}
