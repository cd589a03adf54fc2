//! `--watch`: the guest is swapped when its file is replaced, the same swap
//! as SIGHUP's, on every platform; a file caught half written is waited
//! for, never loaded. (The same, under Wine: `toolchains/windows.rs`.)

use crate::support::guests::{default_guest, install, installed, test_guest, Control};
use crate::support::{assert_echoes, Host};
use std::io::Write;

/// The host, watching `file` (a copy of the built-in guest).
fn watching(file: &std::path::Path) -> Host {
    Host::start(&["--listen", "127.0.0.1:0", "--watch", file.to_str().unwrap()])
}

/// A new file renamed over the old one (the way deployments and most
/// build tools write): the new guest serves, on the same port.
fn a_guest_file_renamed_over_is_swapped_in() {
    let (_dir, file) = installed(&default_guest());
    let host = watching(&file);
    let addr = host.listen_addr();
    host.wait_for("replacing it swaps the guest");
    assert_echoes(addr, b"the first guest");

    install(&test_guest("echo-std"), &file);
    host.wait_for(&format!(
        "{} changed: loading {} again, to swap it in",
        file.display(),
        file.display()
    ));
    host.wait_for("swap: the new guest instance #2 listens on");
    assert_echoes(addr, b"the second guest");
    host.settled();
    assert!(!host.output().contains("swap failed"), "{}", host.report());
}

/// A file written in place, in two halves: the first half is not a whole
/// component, so nothing is loaded until the second half completes it.
fn a_half_written_guest_file_is_waited_for_never_loaded() {
    let (_dir, file) = installed(&default_guest());
    let host = watching(&file);
    let addr = host.listen_addr();
    host.wait_for("replacing it swaps the guest");

    let new = std::fs::read(test_guest("echo-std")).unwrap();
    let (first, rest) = new.split_at(new.len() / 2);
    let mut writing = std::fs::File::create(&file).unwrap();
    writing.write_all(first).unwrap();
    writing.flush().unwrap();
    host.wait_for("changed, but is not a whole component yet");
    let output = host.output();
    assert!(!output.contains("again, to swap it in"), "a torn file was loaded\n{output}");
    assert_echoes(addr, b"the first guest still serves");

    writing.write_all(rest).unwrap();
    drop(writing);
    host.wait_for("swap: the new guest instance #2 listens on");
    assert_echoes(addr, b"the whole new guest");
    let output = host.output();
    assert_eq!(output.matches("again, to swap it in").count(), 1, "{output}");
    assert!(!output.contains("swap failed"), "{output}");
}

/// With `--per-client`: new clients get the new guest; a client connected
/// before the swap finishes with the old one.
fn with_per_client_new_clients_get_the_new_guest() {
    let (_dir, file) = installed(&test_guest("echo-stdio"));
    let host = Host::start(&[
        "--per-client",
        "--listen",
        "127.0.0.1:0",
        "--watch",
        file.to_str().unwrap(),
    ]);
    let addr = host.per_client_addr(1);
    host.wait_for("replacing it swaps the guest");
    let mut before = crate::support::connect(addr);
    assert!(crate::support::clients::echo(&mut before, b"old\n"));

    install(&test_guest("stdio-tricks"), &file);
    host.wait_for("again, for new clients");
    host.wait_for("swap: new clients get the new guest; the 1 instances running finish");
    // The new guest answers `E` with its environment; the old one echoes it.
    let mut after = crate::support::connect(addr);
    after.write_all(b"E").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&after), &mut line).unwrap();
    assert!(line.starts_with("REMOTE_ADDR=127.0.0.1 "), "{line:?}");
    assert!(crate::support::clients::echo(&mut before, b"E"), "the old instance echoes");
}

/// The file replaced again while a swap is under way: the newest file is
/// swapped in once that swap has ended (here, failed), so that what runs
/// in the end is what the file holds.
fn a_file_changed_during_a_swap_is_swapped_in_after_it() {
    let (_dir, file) = installed(&default_guest());
    let control = Control::new();
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-connect",
        &control.addr(),
        "--watch",
        file.to_str().unwrap(),
        "--",
        &control.addr(),
        "bind",
    ]);
    let addr = host.listen_addr();
    host.wait_for("replacing it swaps the guest");
    // A guest that holds its swap open until the test lets go, then traps.
    install(&test_guest("swap-window"), &file);
    let held = control.accept();
    install(&test_guest("echo-std"), &file);
    host.wait_for("while a swap is under way: swapping it in next");
    drop(held);
    host.wait_for("swap failed:");
    host.wait_for("swap: the new guest instance #3 listens on");
    assert_echoes(addr, b"the newest file serves");
}

/// --watch needs a file: the built-in guest never changes.
fn watch_without_a_guest_file_is_one_line() {
    let (status, output) = Host::start(&["--listen", "127.0.0.1:0", "--watch"]).wait();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(
            "error: --watch watches a guest file: name one (the built-in guest never changes)"
        ),
        "{output}"
    );
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        a_guest_file_renamed_over_is_swapped_in,
        a_half_written_guest_file_is_waited_for_never_loaded,
        with_per_client_new_clients_get_the_new_guest,
        a_file_changed_during_a_swap_is_swapped_in_after_it,
        watch_without_a_guest_file_is_one_line,
    ]
}
