//! Every limit is a total over everything a guest can hold, tried with
//! guests written to get around it: sockets dropped with their streams
//! kept, several memories, pollables without end, sends left behind.

use crate::support::clients::assert_reset;
use crate::support::guests::{component_from_wat, run_export, test_guest};
use crate::support::{connect, connect_unless_reset, Host, PATIENCE};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;

fn guest(name: &str) -> String {
    test_guest(name).display().to_string()
}

/// A guest that drops each accepted socket and keeps its streams holds
/// the connection all the same: it counts under --max-connections.
fn a_guest_keeping_streams_without_their_sockets_is_held_to_the_cap() {
    // One place for the listener, three for connections.
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "4",
        &guest("stream-hoarder"),
    ]);
    let addr = host.listen_addr();
    let held: Vec<TcpStream> = (1..=3)
        .map(|n| {
            let client = connect(addr);
            host.wait_for(&format!("holding {n} connections through their streams alone"));
            client
        })
        .collect();
    for _ in 0..5 {
        // Reset as it connects, or right after.
        let Ok(mut client) = connect_unless_reset(addr) else { continue };
        let peer = client.local_addr().unwrap();
        host.wait_for(&format!("refused: a client from {peer}, turned away"));
        assert_reset(&mut client);
    }
    host.wait_for_total("turned away", "clients turned away at the cap", 5);
    // The host's own count, said after every accept it has made so far.
    host.settled();
    assert!(host.output().contains(" 4 of 4 sockets"), "{}", host.report());
    drop(held);
}

/// A component with four memories, each well under --max-memory, that
/// together would pass it: the total is what counts. (Built here from
/// WAT: four instances of one module, each growing its memory by 6 MiB;
/// any refused growth traps.)
fn memory_is_limited_as_a_total_over_all_of_a_guests_memories() {
    let instances = 4;
    let file = component_from_wat(&several_memories(instances, 96));
    let (status, output) = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--max-memory",
        "16MiB",
        file.path().to_str().unwrap(),
    ])
    .wait();
    assert!(!status.success(), "four memories of 6 MiB each fit in 16 MiB?\n{output}");
    assert!(
        output.contains("over all its memories; its limit is 16MiB (--max-memory)"),
        "{output}"
    );
    assert!(
        output.contains("error: the guest trapped after reaching its memory limit of 16MiB"),
        "{output}"
    );
    // Under a limit that holds all four, the same component runs to its end.
    let file = component_from_wat(&several_memories(instances, 96));
    let (status, output) = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--max-memory",
        "32MiB",
        file.path().to_str().unwrap(),
    ])
    .wait();
    assert!(status.success(), "{output}");
}

/// The number of core instances and of memories a guest may create is
/// small and stated; a component past either is refused at start.
fn a_guest_with_too_many_instances_or_memories_is_refused_naming_the_limit() {
    for (wat, what) in [(several_memories(32, 0), "instance"), (memories_in_one_module(9), "memor")]
    {
        let file = component_from_wat(&wat);
        let (status, output) =
            Host::start(&["--listen", "127.0.0.1:0", file.path().to_str().unwrap()]).wait();
        assert!(!status.success(), "{output}");
        let error = output.lines().find(|l| l.contains("error:")).unwrap_or_default();
        assert!(error.contains("resource limit exceeded") && error.contains(what), "{output}");
    }
}

/// A guest that makes pollables without end, from a timer (wasmtime-wasi's)
/// or from a TCP socket (the host's): stopped when its handles reach the
/// stated capacity, which follows --max-connections, with a line naming
/// it; the host's memory stays small.
#[cfg(target_os = "linux")] // reads /proc
fn a_guest_making_pollables_without_end_is_stopped_at_its_handle_limit() {
    for kind in ["timer", "tcp"] {
        let host = Host::start(&[
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "100",
            "--restart",
            "on-failure",
            &guest("pollable-hoarder"),
            "--",
            kind,
        ]);
        // 100 sockets x 8 handles + 1024.
        let line = host.wait_for("refused: the guest holds 1824 handles");
        assert!(
            line.contains(
                "the most it may (1824: 8 for each socket --max-connections allows, and 1024 more)"
            ),
            "{line}"
        );
        let restart = host.wait_for("restarting it in");
        assert!(
            restart.contains("the guest was stopped: the guest holds 1824 handles"),
            "{restart}"
        );
        // wasmtime's own limit (a million) would have let the host grow by
        // hundreds of MiB; peak resident memory of a debug build, all told:
        let peak = host.memory("VmHWM");
        assert!(peak < 64 << 20, "the host's peak RSS was {} MiB\n{}", peak >> 20, host.report());
    }
}

/// Writes that the client never reads, left to the host when the guest
/// lets go of the connections: the host gives up after --send-timeout,
/// and resets them, freeing their descriptors.
#[cfg(target_os = "linux")] // reads /proc
fn sends_left_behind_end_after_the_send_timeout() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--send-timeout",
        "1s",
        &guest("send-and-let-go"),
        "--",
        "3",
    ]);
    let addr = host.listen_addr();
    let idle = host.open_sockets();
    let clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    assert_sends_left_behind(&host, 3);
    // Until the timeout, the host still sends for them.
    host.wait_for_nth("gave up sending to 127.0.0.1:", 3);
    host.wait_for_open_sockets(idle);
    for mut client in clients {
        assert_reset_after_data(&mut client);
    }
}

/// The same, but the guest instance ends (it traps; it is restarted): the
/// sends it left behind end with it, at once, long before their timeout.
#[cfg(target_os = "linux")] // reads /proc
fn sends_left_behind_end_when_their_guest_instance_ends() {
    let host = Host::start(&[
        "--listen",
        "127.0.0.1:0",
        "--send-timeout",
        "1h",
        "--restart",
        "on-failure",
        &guest("send-and-let-go"),
        "--",
        "3",
        "then-trap",
    ]);
    let addr = host.listen_addr();
    let idle = host.open_sockets();
    let clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    assert_sends_left_behind(&host, 3);
    host.wait_for("restarting it in");
    host.nth_listen_addr(2);
    host.wait_for_open_sockets(idle);
    host.settled();
    assert!(!host.output().contains("gave up sending"), "{}", host.report());
    // Reset, not closed: a client must not take what it got for the whole.
    for mut client in clients {
        assert_reset_after_data(&mut client);
    }
}

/// The guest let go of `n` clients, each after writing (so with a send
/// still under way: the clients read nothing).
fn assert_sends_left_behind(host: &Host, n: usize) {
    for i in 1..=n {
        let line = host.wait_for(&format!("let go of client {i} after writing "));
        let written: usize = line.split(' ').nth(7).unwrap().parse().unwrap();
        assert!(written > 0, "{line}");
    }
}

/// A component whose `run` grows each of `instances` memories (one per
/// instance of one module) by `pages` 64 KiB pages, trapping if refused.
fn several_memories(instances: usize, pages: u32) -> String {
    let mut wat = String::from(
        r#"(component
  (core module $m
    (memory 1)
    (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))
"#,
    );
    let mut main = String::from("  (core module $main\n");
    let mut with = String::new();
    let mut body = String::new();
    for i in 0..instances {
        wat += &format!("  (core instance $i{i} (instantiate $m))\n");
        main += &format!("    (import \"i{i}\" \"grow\" (func $g{i} (param i32) (result i32)))\n");
        with += &format!(" (with \"i{i}\" (instance $i{i}))");
        body += &format!(
            "      (if (i32.eq (call $g{i} (i32.const {pages})) (i32.const -1)) (then unreachable))\n"
        );
    }
    main += &format!("    (func (export \"run\") (result i32)\n{body}      i32.const 0))\n");
    wat + &main + &run_export(&format!("(core instance $run (instantiate $main{with}))"))
}

/// A component with one module of `memories` memories.
fn memories_in_one_module(memories: usize) -> String {
    let declared = "(memory 1) ".repeat(memories);
    let main = format!(
        "  (core module $main {declared}(func (export \"run\") (result i32) i32.const 0))\n"
    );
    format!("(component\n{main}{}", run_export("(core instance $run (instantiate $main))"))
}

/// Reads what was sent, until the reset that ends it.
fn assert_reset_after_data(client: &mut TcpStream) {
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut buf) {
            Ok(0) => panic!("the connection ended with a FIN, not a reset"),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected a reset, got {e}"),
        }
    }
}

/// Files count as descriptors: a guest opening files under its --dir grant
/// without end, and keeping each open through a stream after dropping its
/// descriptor, is refused at --max-files (the granted directory itself
/// holding one place), with `quota`; the log says so at most ten times a
/// second and counts the rest.
fn a_guest_opening_files_without_end_is_refused_at_the_file_cap() {
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data:rw", dir.path().display());
    let (status, output) = Host::start(&[
        "--no-listen",
        "--dir",
        &grant,
        "--max-files",
        "20",
        &test_guest("file-hoarder").display().to_string(),
    ])
    .wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("refused after 19 files: quota"), "{output}");
    assert!(output.contains("refused 99 times more"), "{output}");
    let line = "refused: opening a file: the guests already hold 20 files and directories \
                (--max-files 20)";
    let written = output.matches(line).count();
    assert!((1..=20).contains(&written), "{written} lines\n{output}");
    assert!(output.contains("ledger: this policy can hold at most"), "{output}");
    assert!(output.contains("20 files"), "the ledger counts them\n{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        a_guest_opening_files_without_end_is_refused_at_the_file_cap,
        a_guest_keeping_streams_without_their_sockets_is_held_to_the_cap,
        memory_is_limited_as_a_total_over_all_of_a_guests_memories,
        a_guest_with_too_many_instances_or_memories_is_refused_naming_the_limit,
        #[cfg(target_os = "linux")]
        a_guest_making_pollables_without_end_is_stopped_at_its_handle_limit,
        #[cfg(target_os = "linux")]
        sends_left_behind_end_after_the_send_timeout,
        #[cfg(target_os = "linux")]
        sends_left_behind_end_when_their_guest_instance_ends,
    ]
}
