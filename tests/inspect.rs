//! `host inspect`: what a component would use, before anything is granted.

use crate::support::guests::{default_guest, test_guest};
use crate::support::{host_command, Host};

fn inspect(args: &[&str]) -> (bool, String) {
    let mut cmd = host_command();
    cmd.arg("inspect").args(args);
    let (status, output) = Host::start_command(&mut cmd).wait();
    (status.success(), output)
}

#[test]
fn the_echo_guest_imports_only_what_an_echo_server_needs() {
    let (ok, output) = inspect(&[default_guest().to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(
        output.contains("wasi:sockets@0.2.12: network, instance-network, tcp, tcp-create-socket"),
        "{output}"
    );
    assert!(output.contains("wasi:io@0.2.12: error, poll, streams"), "{output}");
    assert!(output.contains("wasi:cli@0.2.12: run"), "{output}");
    assert!(output.contains("can this host run it: yes"), "{output}");
    assert!(
        output.contains("TCP ") && !output.contains("UDP") && !output.contains("files "),
        "{output}"
    );
}

#[test]
fn a_std_guest_shows_every_capability_it_could_ask_for() {
    let (ok, output) = inspect(&[test_guest("sandbox-probe").to_str().unwrap()]);
    assert!(ok, "{output}");
    for capability in ["TCP", "UDP", "name lookup", "files", "environment variables", "clocks"] {
        assert!(
            output.lines().any(|l| l.trim_start().starts_with(capability)),
            "no {capability}\n{output}"
        );
    }
}

#[test]
fn json_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("needs-more.wasm");
    let component = wat::parse_str(
        r#"(component (import "example:missing/api" (instance (export "hello" (func)))))"#,
    );
    std::fs::write(&path, component.unwrap()).unwrap();
    let (ok, output) = inspect(&["--json", path.to_str().unwrap()]);
    assert!(ok, "{output}");
    let report: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(report["runnable"], false);
    assert_eq!(report["exports_run"], false);
    assert_eq!(report["missing"], serde_json::json!(["example:missing/api"]));
    assert_eq!(report["imports"]["example:missing"], serde_json::json!(["api"]));
}

#[test]
fn a_core_module_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("module.wasm");
    std::fs::write(&path, wat::parse_str("(module)").unwrap()).unwrap();
    let (ok, output) = inspect(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        output.contains("error:")
            && output.contains("is a core WebAssembly module, not a component"),
        "{output}"
    );
}

/// The README's table of promises names tests: each must exist, so the
/// table cannot point at a test that was renamed or removed.
#[test]
fn the_readme_names_only_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = &readme[readme.find("### Which test keeps which promise").unwrap()..];
    let table = &table[..table.find("\n## ").unwrap()];
    let mut sources = String::new();
    for dir in ["tests", "tests/toolchains", "host/src", "host/src/sockets"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources += &std::fs::read_to_string(path).unwrap();
            }
        }
    }
    let named: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| Promise"))
        .filter_map(|line| line.rsplit(" | ").next())
        .flat_map(|tests| tests.split('`').skip(1).step_by(2))
        .filter(|name| {
            name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(named.len() > 60, "{named:?}");
    let missing: Vec<_> =
        named.iter().filter(|name| !sources.contains(&format!("fn {name}("))).collect();
    assert!(missing.is_empty(), "the README names tests that do not exist: {missing:?}");
}
