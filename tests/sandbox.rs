//! The default sandbox: the guest may listen on the granted address and do
//! nothing else on the network, and sees no files and no host environment.
//! Each refusal is logged by the host with the option that would grant it.

use crate::support::guests::test_guest;
use crate::support::{host_command, Host};
use std::net::TcpListener;

/// Runs the probe guest with these host options, asking it to read `file`;
/// returns its output.
fn probe(options: &[&str], outside: &TcpListener, file: &str) -> String {
    let guest = test_guest("sandbox-probe");
    let target = outside.local_addr().unwrap().to_string();
    let mut cmd = host_command();
    cmd.env("HOST_SECRET", "do-not-leak")
        .args(["--listen", "127.0.0.1:0"])
        .args(options)
        .arg(&guest)
        .args(["--", "127.0.0.1:9", &target, file, "HOST_SECRET", "localhost"]);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(status.success(), "{output}");
    output
}

fn assert_line(output: &str, line: &str) {
    assert!(output.lines().any(|l| l.starts_with(line)), "no line starting {line:?} in\n{output}");
}

fn by_default_everything_but_the_listen_address_is_refused_and_logged() {
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = outside.local_addr().unwrap();
    let output = probe(&[], &outside, "/etc/hostname");

    // What the guest saw.
    assert_line(&output, "bind 127.0.0.1:9: refused");
    assert_line(&output, "listen 0.0.0.0:0: refused");
    assert_line(&output, &format!("connect {target}: refused"));
    assert_line(&output, "read /etc/hostname: refused");
    assert_line(&output, "write /etc/hostname.copy: refused");
    assert_line(&output, "list /: refused");
    assert_line(&output, "env HOST_SECRET: refused");
    assert_line(&output, "resolve localhost: refused");
    assert_line(&output, "udp bind 0.0.0.0:0: refused");
    assert!(!output.contains("ALLOWED") && !output.contains("do-not-leak"), "{output}");

    // What the host logged, each with the way to grant it.
    assert!(output.contains("denied: TCP listen on 0.0.0.0:"), "{output}");
    assert!(output.contains("denied: TCP bind to 127.0.0.1:9 (the guest may only listen on 127.0.0.1:0; grant it with --listen 127.0.0.1:9)"), "{output}");
    assert!(output.contains(&format!("denied: TCP connect to {target} (outbound connections are not granted there; grant this one with --allow-connect {target})")), "{output}");
    assert!(
        output.contains(
            "denied: the guest looked for directories; none are granted (grant one with --dir)"
        ),
        "{output}"
    );
    assert!(output.contains("guest read its environment: it sees LISTEN_ADDR only"), "{output}");
    assert!(
        output.contains("denied: name lookup of \"localhost\" (grant it with --allow-dns)"),
        "{output}"
    );
    assert!(
        output.contains("denied: a UDP socket (UDP is not granted; grant it with --allow-udp)"),
        "{output}"
    );

    // And the connection attempt never left the sandbox.
    outside.set_nonblocking(true).unwrap();
    assert!(outside.accept().is_err(), "the guest reached the outside listener");
}

/// The grants of the test below, as a policy file.
const GRANTING_POLICY: &str = r#"
allow-connect = ["{target}"]
allow-udp = true
allow-dns = true
env = { HOST_SECRET = "granted" }
dir = ["{dir}::/data"]
"#;

fn each_grant_opens_only_what_it_names_given_as_options() {
    let data = data_dir();
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = outside.local_addr().unwrap().to_string();
    let dir = format!("{}::/data", data.path().display());
    let options = [
        "--allow-connect",
        &target,
        "--allow-udp",
        "--allow-dns",
        "--env",
        "HOST_SECRET=granted",
        "--dir",
        &dir,
    ];
    assert_granted(&probe(&options, &outside, "/data/hello.txt"), &outside);
    assert!(!data.path().join("hello.txt.copy").exists(), "a read-only --dir was written to");
}

fn a_directory_granted_rw_can_be_written() {
    let data = data_dir();
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = format!("{}::/data:rw", data.path().display());
    let output = probe(&["--dir", &dir], &outside, "/data/hello.txt");
    assert_line(&output, "read /data/hello.txt: ALLOWED");
    assert_line(&output, "write /data/hello.txt.copy: ALLOWED");
    let written = std::fs::read_to_string(data.path().join("hello.txt.copy")).unwrap();
    assert_eq!(written, "written by the guest");
}

fn each_grant_opens_only_what_it_names_given_as_a_policy_file() {
    let data = data_dir();
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let policy = GRANTING_POLICY
        .replace("{target}", &outside.local_addr().unwrap().to_string())
        .replace("{dir}", &data.path().display().to_string());
    let file = data.path().join("echo.toml");
    std::fs::write(&file, policy).unwrap();
    let output = probe(&["--policy", file.to_str().unwrap()], &outside, "/data/hello.txt");
    assert_granted(&output, &outside);
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello").unwrap();
    dir
}

fn assert_granted(output: &str, outside: &TcpListener) {
    let target = outside.local_addr().unwrap();
    assert_line(output, &format!("connect {target}: ALLOWED"));
    assert_line(output, "udp bind 0.0.0.0:0: ALLOWED");
    assert_line(output, "resolve localhost: ALLOWED");
    assert_line(output, "read /data/hello.txt: ALLOWED");
    assert_line(output, "write /data/hello.txt.copy: refused");
    assert_line(output, "env HOST_SECRET: ALLOWED (granted)");
    assert!(output.contains(&format!("guest connecting to {target}")), "{output}");
    assert!(output.contains("guest bound UDP 0.0.0.0:0"), "{output}");
    // Not granted, still refused; the host's own value never leaks.
    assert_line(output, "bind 127.0.0.1:9: refused");
    assert_line(output, "listen 0.0.0.0:0: refused");
    assert_line(output, "list /: refused");
    assert!(!output.contains("do-not-leak"), "{output}");
    outside.set_nonblocking(true).unwrap();
    assert!(outside.accept().is_ok(), "the granted connection did not arrive");
}

fn every_listen_address_is_granted_and_served_ipv4_and_ipv6() {
    let host = Host::start(&["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]);
    let first = host.nth_listen_addr(1);
    let second = host.nth_listen_addr(2);
    let mut families = [first.is_ipv4(), second.is_ipv4()];
    families.sort();
    assert_eq!(families, [false, true], "{first} {second}");
    for addr in [first, second] {
        crate::support::assert_echoes(addr, format!("hello over {addr}").as_bytes());
    }
    assert!(host.output().contains("granted: listen on 127.0.0.1:0, [::1]:0"), "{}", host.output());
}

/// `--no-listen`, for a guest that only connects out: no address to listen
/// on and no LISTEN_ADDR, so a server's bind (here the default guest's
/// fallback, 0.0.0.0:9000) is refused, saying what was granted.
fn no_listen_leaves_nothing_to_listen_on() {
    let (status, output) = Host::start(&["--no-listen"]).wait();
    assert!(!status.success(), "{output}");
    assert!(output.contains("granted: no listen address; everything else is denied"), "{output}");
    assert!(output.contains("guest read its environment: it sees no variables;"), "{output}");
    let denied = "WARN denied: TCP bind to 0.0.0.0:9000 (no listen address is granted; grant it with --listen 0.0.0.0:9000)";
    assert!(output.contains(denied), "{output}");
    assert!(output.contains("[TCP server] bind() failed: access-denied"), "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        by_default_everything_but_the_listen_address_is_refused_and_logged,
        each_grant_opens_only_what_it_names_given_as_options,
        a_directory_granted_rw_can_be_written,
        each_grant_opens_only_what_it_names_given_as_a_policy_file,
        every_listen_address_is_granted_and_served_ipv4_and_ipv6 [needs need::ipv6()],
        no_listen_leaves_nothing_to_listen_on,
    ]
}
