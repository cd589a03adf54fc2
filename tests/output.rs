//! What a guest writes, and what the host makes of it: its stdout and
//! stderr bounded in bytes whoever reads them (or not), escaped before any
//! cut, a line of the log never longer than its cap, and nothing it
//! writes or names able to pass for a line of the host's own, set a
//! journal priority, or take the host down.

use crate::support::guests::{component_from_wat, run_export, test_guest};
use crate::support::{host_command, prepare, Host, HOST_BIN};
use std::process::Command;

fn guest(name: &str) -> String {
    test_guest(name).display().to_string()
}

/// A guest printing, to a stdout nobody reads, lines that grow six times
/// when escaped (DEL characters): the host holds at most its stdout queue
/// for them (2 MiB), not what the guest printed (400 MiB escaped).
#[cfg(target_os = "linux")] // reads /proc
fn a_stdout_nobody_reads_holds_its_queue_at_most_whatever_is_printed() {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both just made, each owned here alone.
    let (_unread, write) = unsafe {
        (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    };
    let mut cmd = host_command();
    cmd.args(["--listen", "127.0.0.1:0", &guest("output-tricks"), "--", "dels", "16384"]);
    let host = Host::start_command(cmd.stdout(std::process::Stdio::from(write)));
    host.wait_for("ledger: this policy can hold");
    let before = host.memory("VmRSS");
    host.wait_for("output-tricks: wrote 16384 lines");
    let grown = host.memory("VmHWM").saturating_sub(before);
    println!("the host's peak RSS grew by {} KiB", grown >> 10);
    assert!(grown < 8 << 20, "the host's peak RSS grew by {} MiB\n{}", grown >> 20, host.report());
}

/// A line of the guest's stderr is at most 4 KiB in the log once escaped:
/// a line of DEL characters (six bytes each, escaped) is cut after
/// escaping, into lines that each hold to the cap.
fn a_log_line_holds_to_its_cap_after_escaping() {
    let (status, output) =
        Host::start(&["--listen", "127.0.0.1:0", &guest("output-tricks"), "--", "stderr-dels"])
            .wait();
    assert!(status.success(), "{output}");
    let lines: Vec<&str> = output.lines().filter(|l| l.contains("\\u{7f}")).collect();
    let escaped: usize = lines.iter().map(|l| l.matches("\\u{7f}").count()).sum();
    assert_eq!(escaped, 4096, "every DEL is shown, escaped\n{output}");
    for line in &lines {
        let message = line.split_once(" INFO ").map_or(*line, |(_, m)| m);
        assert!(message.len() <= 4096, "a line of {} bytes: {line:.80}...", message.len());
    }
}

/// A guest's text never passes for the host's own lines: CR, ESC and
/// newlines in its stderr are escaped or end its own line (each shown
/// after the host's prefix), and a stdout line starting with `<0>` carries
/// the priority the host gives it when stdout is the journal (`<6>`), so
/// the journal reads no emergency.
#[cfg(unix)]
fn a_guest_cannot_forge_a_log_line_or_a_journal_priority() {
    let (status, output) =
        Host::start(&["--listen", "127.0.0.1:0", &guest("output-tricks"), "--", "forge"]).wait();
    assert!(status.success(), "{output}");
    assert_no_raw_control_characters(&output);
    assert!(output.contains("innocent\\rWARN forged over it"), "{output}");
    let forged = output.lines().find(|l| l.contains("ERROR forged line")).unwrap();
    assert!(forged.contains(" INFO 2026-12-06T00:00:00.000000Z ERROR forged line"), "{forged}");
    assert!(output.contains("escape \\u{1b}[2J\\u{1b}[31mred"), "{output}");

    // Under systemd, stdout and stderr are one stream to the journal.
    let script = "exec 2>&1; JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"";
    let mut cmd = Command::new("sh");
    prepare(&mut cmd).args(["-c", script, HOST_BIN]);
    cmd.args(["--listen", "127.0.0.1:0", &guest("output-tricks"), "--", "forge"]);
    let (status, output) = Host::start_command(&mut cmd).wait();
    assert!(status.success(), "{output}");
    let line = output.lines().find(|l| l.contains("emergency from the guest")).unwrap();
    assert_eq!(line, "<6><0>emergency from the guest", "{output}");
    assert!(output.lines().all(|l| l.starts_with("<6>") || l.starts_with("<4>")), "{output}");
}

fn assert_no_raw_control_characters(output: &str) {
    for line in output.lines() {
        assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "a raw control: {line:?}");
    }
}

/// A guest whose function names (its own name section: any bytes) hold
/// CR, ESC, newlines and a journal priority traps: the trap's report (the
/// host's exit error, and each restart line with `--restart on-failure`)
/// shows them escaped, on the line they belong to; none starts a line.
fn a_guest_cannot_forge_lines_with_its_function_names() {
    let evil = r#"evil\0a<0>forged emergency\0d\1b[2Jcleared"#;
    let wat = format!(
        r#"(component
  (core module $main
    (func $inner (@name "{evil}") unreachable)
    (func (export "run") (result i32) call $inner i32.const 0))
{}"#,
        run_export("(core instance $run (instantiate $main))")
    );
    let component = component_from_wat(&wat);
    let file = component.path().to_str().unwrap();
    for restart in ["never", "on-failure"] {
        let args = ["--listen", "127.0.0.1:0", "--restart", restart, file];
        let (status, output) = Host::start(&args).wait();
        assert!(!status.success(), "{output}");
        assert_no_raw_control_characters(&output);
        assert!(output.lines().all(|l| !l.starts_with("<0>")), "{output}");
        let shown = "evil\\n<0>forged emergency\\r\\u{1b}[2Jcleared";
        let error = output.lines().find(|l| l.starts_with("wasi-tcp-host: error:")).unwrap();
        assert!(error.contains(&format!("(in {shown}")), "{error}");
        let frames = output.lines().filter(|l| l.contains(shown)).count();
        assert!(frames >= 2, "the first line and the backtrace name it: {output}");
        if restart == "on-failure" {
            assert_eq!(output.matches("restarting it in").count(), 4, "{output}");
        }
    }
}

/// One 100 MiB write to stderr, no newline, never takes the host down (a
/// debug build included: no recursion on its size): as std writes it
/// (pieces check-write allows) it is cut into lines, and the guest goes
/// on; in one `write` that ignores check-write, it is a trap, the guest's
/// own, reported as one.
fn a_huge_write_to_stderr_never_takes_the_host_down() {
    let run = |mode: &str| {
        Host::start(&["--listen", "127.0.0.1:0", &guest("output-tricks"), "--", mode]).wait()
    };
    let (status, output) = run("huge-stderr");
    assert!(status.success(), "{output}");
    assert!(output.contains("still here"), "{output}");
    let (status, output) = run("huge-raw-write");
    assert_eq!(status.code(), Some(1), "an error exit, not a crash: {status:?}\n{output}");
    assert!(output.contains("write of more bytes than check-write allowed"), "{output}");
    assert!(!output.contains("still here"), "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        #[cfg(target_os = "linux")]
        a_stdout_nobody_reads_holds_its_queue_at_most_whatever_is_printed,
        a_log_line_holds_to_its_cap_after_escaping,
        #[cfg(unix)]
        a_guest_cannot_forge_a_log_line_or_a_journal_priority,
        a_guest_cannot_forge_lines_with_its_function_names,
        a_huge_write_to_stderr_never_takes_the_host_down,
    ]
}
