//! `host inspect`: what a component would use, before anything is granted.

use crate::support::guests::{default_guest, test_guest};
use crate::support::{host_command, Host};

fn inspect(args: &[&str]) -> (bool, String) {
    let mut cmd = host_command();
    cmd.arg("inspect").args(args);
    let (status, output) = Host::start_command(&mut cmd).wait();
    (status.success(), output)
}

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

/// A command that reads stdin and opens no socket can serve one instance
/// per client; the socket-serving default guest cannot (it listens itself).
fn inspect_says_which_guests_serve_one_instance_per_client() {
    let (ok, output) = inspect(&[test_guest("echo-stdio").to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(output.contains("one instance per client (--per-client): yes"), "{output}");
    let (ok, output) = inspect(&["--json", default_guest().to_str().unwrap()]);
    assert!(ok, "{output}");
    let report: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!((&report["runnable"], &report["per_client"]), (&true.into(), &false.into()));
}

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
    assert_eq!(report["per_client"], false);
    assert_eq!(report["exports_run"], false);
    assert_eq!(report["missing"], serde_json::json!(["example:missing/api"]));
    assert_eq!(report["imports"]["example:missing"], serde_json::json!(["api"]));
}

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

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        inspect_says_which_guests_serve_one_instance_per_client,
        the_echo_guest_imports_only_what_an_echo_server_needs,
        a_std_guest_shows_every_capability_it_could_ask_for,
        json_names_what_is_missing,
        a_core_module_is_named_as_such,
    ]
}
