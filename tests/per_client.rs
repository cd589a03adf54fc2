//! `--per-client`: one guest instance per client, the connection its stdin
//! and stdout. The lesson's guest, a guest that misbehaves on command
//! (`stdio-tricks`), and the limits, each per instance.

use crate::observe::wait_for_sample;
use crate::support::clients::{assert_reset, echo};
use crate::support::guests::{install, installed, test_guest};
use crate::support::{assert_echoes, connect, http_get, pattern, sample, Host};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A host serving `guest` one instance per client, and its address.
fn per_client(guest: &str, args: &[&str]) -> (Host, SocketAddr) {
    let guest = test_guest(guest).display().to_string();
    let mut all = vec!["--per-client", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    all.push(&guest);
    let host = Host::start(&all);
    let addr = host.per_client_addr(1);
    (host, addr)
}

/// One line of text back from one write.
fn ask(client: &mut TcpStream, question: &[u8]) -> String {
    client.write_all(question).unwrap();
    let mut answer = vec![0; 256];
    let n = client.read(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// The lesson's guest, a plain stdin-to-stdout loop, echoes three clients
/// at once, 100 kB each, to the byte and to the end of the stream; its
/// stderr reaches the log, each line marked with the client's instance.
fn the_lesson_guest_echoes_every_client_through_stdin_and_stdout() {
    let (host, addr) = per_client("echo-stdio", &[]);
    let clients: Vec<_> = (0..3)
        .map(|seed| std::thread::spawn(move || assert_echoes(addr, &pattern(100_000, seed))))
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    let first = connect(addr);
    let peer = first.local_addr().unwrap();
    let line = host.wait_for(&format!("{peer}}}: serving 127.0.0.1"));
    assert!(line.contains("instance{#4 "), "the fourth client's instance is #4: {line}");
    drop(first);
    host.wait_for(&format!("{peer}}}: 127.0.0.1 left"));
}

/// The instance's environment: REMOTE_ADDR and REMOTE_PORT name its
/// client, beside the operator's --env, and nothing else (no LISTEN_ADDR:
/// the guest listens nowhere).
fn the_environment_names_the_client() {
    let (_host, addr) = per_client("stdio-tricks", &["--env", "GREETING=hello"]);
    let mut client = connect(addr);
    let port = client.local_addr().unwrap().port();
    let expected =
        format!("REMOTE_ADDR=127.0.0.1 REMOTE_PORT={port} VARS=GREETING,REMOTE_ADDR,REMOTE_PORT\n");
    assert_eq!(ask(&mut client, b"E"), expected);
}

/// Nothing is shared between instances but the compiled code: what one
/// client's instance keeps in memory, another's cannot read.
fn one_clients_instance_never_sees_anothers_memory() {
    let (_host, addr) = per_client("stdio-tricks", &[]);
    let mut first = connect(addr);
    assert_eq!(ask(&mut first, b"Ksecret of the first"), "Ksecret of the first");
    assert_eq!(ask(&mut first, b"R"), "secret of the first", "an instance keeps its own");
    let mut second = connect(addr);
    assert_eq!(ask(&mut second, b"R"), "(nothing)", "another client's instance is fresh");
}

/// A guest that traps on one client's input costs that client alone: it
/// is reset, one line names it, and 100 other clients connected at the
/// same time all echo, before and after.
fn a_trap_costs_only_its_own_client() {
    let (host, addr) = per_client("stdio-tricks", &[]);
    let mut others: Vec<TcpStream> = (0..100).map(|_| connect(addr)).collect();
    for (i, client) in others.iter_mut().enumerate() {
        assert!(echo(client, format!("before {i}").as_bytes()), "{}", host.report());
    }
    let mut victim = connect(addr);
    let peer = victim.local_addr().unwrap();
    victim.write_all(b"!").unwrap();
    assert_reset(&mut victim);
    let line = host.wait_for(&format!("its client {peer} was reset"));
    assert!(line.contains("the guest trapped"), "{line}");
    for (i, client) in others.iter_mut().enumerate() {
        assert!(echo(client, format!("after {i}").as_bytes()), "{}", host.report());
    }
}

/// --max-memory and --cpu-budget bound each instance: a client whose
/// instance allocates without end, and one whose instance spins, are
/// reset, each with the limit named; a third client's instance, started
/// before both, echoes throughout.
fn memory_and_cpu_limits_apply_to_each_instance() {
    let (host, addr) = per_client("stdio-tricks", &["--max-memory", "32MiB", "--cpu-budget", "1s"]);
    let mut bystander = connect(addr);
    assert!(echo(&mut bystander, b"before"));
    let mut hoarder = connect(addr);
    hoarder.write_all(b"M").unwrap();
    assert_reset(&mut hoarder);
    host.wait_for("after reaching its memory limit of 32MiB (--max-memory)");
    let mut spinner = connect(addr);
    spinner.write_all(b"S").unwrap();
    assert_reset(&mut spinner);
    host.wait_for("used up its CPU budget of 1s (--cpu-budget)");
    assert!(echo(&mut bystander, b"after"), "{}", host.report());
}

/// A guest that exits with a failure status closes its client's
/// connection the ordinary way (a FIN, not a reset), after what it wrote.
fn an_exit_closes_the_connection_after_what_the_guest_wrote() {
    let (host, addr) = per_client("stdio-tricks", &[]);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"some bytes"));
    client.write_all(b"X").unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("end of stream, not a reset");
    assert!(rest.is_empty(), "{rest:?}");
    host.wait_for("the guest exited with status 1; closing the connection");
}

/// What the guest wrote before `run` returned reaches the client before
/// the connection closes, even when the guest never flushed it.
fn what_the_guest_wrote_is_sent_before_the_connection_closes() {
    let (host, addr) = per_client("stdio-tricks", &[]);
    let mut client = connect(addr);
    client.write_all(b"W").unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("the bytes, then end of stream");
    assert_eq!(back.len(), 60_000, "{}", host.report());
}

/// --max-connections caps the instances alive at once. The client beyond
/// it is not turned away: it waits in the listen backlog (the system's
/// own queue shows it there), and is served as soon as a place frees.
fn a_client_beyond_the_cap_waits_in_the_backlog_until_a_place_frees() {
    let (host, addr) = per_client("echo-stdio", &["--max-connections", "2"]);
    let mut first = connect(addr);
    let mut second = connect(addr);
    assert!(echo(&mut first, b"one") && echo(&mut second, b"two"));
    let mut third = connect(addr);
    third.write_all(b"three").unwrap();
    wait_for_accept_queue(addr, 1);
    drop(first);
    let mut back = [0u8; 5];
    third.read_exact(&mut back).expect("the waiting client is served, not reset");
    assert_eq!(&back, b"three", "{}", host.report());
    assert!(echo(&mut second, b"still two"));
}

/// Waits until `n` connections wait to be accepted on the listener at
/// `addr` (Linux shows them as the listener's receive queue).
fn wait_for_accept_queue(addr: SocketAddr, n: usize) {
    crate::support::harness::waiting_for(|| format!("{n} clients in the backlog of {addr}"));
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes([127, 0, 0, 1]), addr.port());
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let queued = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), then tx_queue:rx_queue.
            (fields[1] == local && fields[3] == "0A")
                .then(|| usize::from_str_radix(fields[4].split(':').nth(1).unwrap(), 16).unwrap())
        });
        if queued == Some(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{queued:?} clients in the backlog, not {n}");
        std::thread::yield_now();
    }
}

/// --idle-timeout closes a client that sends nothing: the client reads the
/// end of the stream, and its instance is stopped (nothing it does can
/// reach the client any more); the log says why.
fn an_idle_client_is_closed_and_its_instance_ends() {
    let (host, addr) = per_client("echo-stdio", &["--idle-timeout", "1s"]);
    let mut idle = connect(addr);
    let peer = idle.local_addr().unwrap();
    assert!(echo(&mut idle, b"then nothing"));
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).expect("the end of the stream, not a reset");
    assert!(rest.is_empty(), "{rest:?}");
    host.wait_for(&format!(
        "closed the connection of {peer}: nothing received or sent for 1s (--idle-timeout)"
    ));
    host.wait_for(&format!("stopped the instance of client {peer}: its connection is closed"));
}

/// --allow-client turns a client away before any instance starts for it.
fn a_client_not_allowed_gets_no_instance() {
    let (host, addr) = per_client("echo-stdio", &["--allow-client", "10.0.0.0/8"]);
    let mut client = connect(addr);
    let peer = client.local_addr().unwrap();
    host.wait_for(&format!("denied: TCP client from {peer}"));
    assert_reset(&mut client);
    host.settled();
    assert!(!host.output().contains("serving 127.0.0.1"), "{}", host.report());
}

/// --trace shows each read from stdin and write to stdout as the recv and
/// send they are, every line marked with the client's instance.
fn trace_marks_every_line_with_the_clients_instance() {
    let (host, addr) = per_client("echo-stdio", &["--trace-data"]);
    let mut client = connect(addr);
    let peer = client.local_addr().unwrap();
    assert!(echo(&mut client, b"hello"));
    let recv = host.wait_for(&format!("instance{{#1 {peer}}}: trace: recv("));
    // Rust's std reads with blocking-read: the trace names the call it
    // really was.
    let read = "= stdin.blocking-read(";
    assert!(recv.contains(read) && recv.ends_with(") -> 5 bytes \"hello\""), "{recv}");
    let send = host.wait_for(&format!("instance{{#1 {peer}}}: trace: send(5) "));
    assert!(send.ends_with("= stdout.write(5 bytes) -> ok \"hello\""), "{send}");
}

/// SIGHUP: new clients get the guest file as it is now; a client already
/// connected keeps the instance it has, of the old guest.
fn sighup_gives_new_clients_the_new_guest() {
    let (_dir, file) = installed(&test_guest("echo-stdio"));
    let host = Host::start(&["--per-client", "--listen", "127.0.0.1:0", file.to_str().unwrap()]);
    let addr = host.per_client_addr(1);
    let mut old = connect(addr);
    assert!(echo(&mut old, b"E"), "the old guest echoes everything");
    install(&test_guest("stdio-tricks"), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("swap: new clients get the new guest; the 1 instances running finish");
    let mut new = connect(addr);
    assert!(ask(&mut new, b"E").starts_with("REMOTE_ADDR=127.0.0.1"), "{}", host.report());
    assert!(echo(&mut old, b"E"), "the connected client keeps the old guest");
}

/// SIGQUIT: the listener closes at once (a new client is refused), and
/// the clients connected are served until they leave; then the host exits.
fn sigquit_refuses_new_clients_and_serves_those_connected() {
    let (host, addr) = per_client("echo-stdio", &["--drain-timeout", "5m"]);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"before"));
    host.signal(libc::SIGQUIT);
    host.wait_for("SIGQUIT received: the listeners are closed; serving the 1 clients connected");
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("a client after SIGQUIT got {other:?}\n{}", host.report()),
    }
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    drop(client);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("stop: every client has left; stopped"), "{output}");
}

/// SIGTERM too stops gracefully; a second SIGTERM stops every instance
/// at once (its client sees the connection end).
fn sigterm_drains_and_a_second_sigterm_stops_at_once() {
    let (host, addr) = per_client("echo-stdio", &["--drain-timeout", "5m"]);
    let mut client = connect(addr);
    assert!(echo(&mut client, b"before"));
    host.signal(libc::SIGTERM);
    host.wait_for("SIGTERM received: the listeners are closed; serving the 1 clients connected");
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("a client after SIGTERM got {other:?}\n{}", host.report()),
    }
    assert!(echo(&mut client, b"still served"), "{}", host.report());
    host.signal(libc::SIGTERM);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("SIGTERM received: stopping every instance"), "{output}");
    assert!(matches!(client.read(&mut [0u8; 1]), Ok(0)), "the connection did not end with a FIN");
}

/// After a burst of clients the pool keeps what their instances touched
/// resident; once none is alive, the host makes the pool afresh and lets
/// the old one go: its resident memory comes back near what the host held
/// before the burst (after a few clients, one at a time).
#[cfg(target_os = "linux")]
fn a_burst_of_clients_leaves_no_memory_behind() {
    let (host, addr) = per_client("echo-stdio", &["--max-connections", "400"]);
    for _ in 0..8 {
        assert!(echo(&mut connect(addr), b"warm"));
    }
    let idle = host.memory("VmRSS");
    let mut burst: Vec<TcpStream> = (0..300).map(|_| connect(addr)).collect();
    for client in &mut burst {
        assert!(echo(client, b"burst"), "{}", host.report());
    }
    let peak = host.memory("VmRSS");
    drop(burst);
    host.wait_for(
        "per-client: 300 instances were alive at once, none is now: the pool is made afresh",
    );
    host.wait_for("per-client: the old pool is gone");
    let after = host.memory("VmRSS");
    eprintln!("resident: {idle} before, {peak} with 300 clients, {after} after");
    assert!(peak > idle + (8 << 20), "the burst made no difference? {idle} {peak}");
    assert!(after * 100 <= idle * 115, "{after} bytes resident after the burst, {idle} before");
}

/// A guest that serves clients itself (the built-in one opens sockets) is
/// named at start: one instance per client is not for it. Its trial
/// instance gets no listen address: the bind it tries is denied, it
/// fails, and the host refuses to serve with it, saying why.
fn a_guest_that_serves_clients_itself_is_named_at_start_and_refused() {
    let (status, output) = Host::start(&["--per-client", "--listen", "127.0.0.1:0"]).wait();
    assert!(!status.success(), "{output}");
    let named = "echo-guest (built in) opens TCP sockets of its own, so it serves clients itself";
    assert!(output.contains(named), "{output}");
    assert!(output.contains("denied: TCP bind to 0.0.0.0:9000 (no listen address is granted"));
    let refused = "error: echo-guest (built in) cannot serve: its trial instance, with no client, \
                   failed: the guest exited with an error";
    assert!(output.contains(refused), "{output}");
}

/// With --metrics: ready while serving, the clients and their instances
/// counted (connections open back to 0 once they left), not ready from
/// SIGQUIT on.
fn metrics_count_the_clients_and_readiness_ends_with_sigquit() {
    let (host, addr) =
        per_client("echo-stdio", &["--metrics", "127.0.0.1:0", "--drain-timeout", "5m"]);
    let metrics = host.metrics_addr();
    // Health is served from the start; ready once the guest has passed its trial.
    crate::observe::wait_until_ready(metrics, &host);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for client in &mut clients {
        assert!(echo(client, b"counted"));
    }
    let text = wait_for_sample(metrics, "wasi_tcp_host_connections_open", 3.0);
    assert_eq!(sample(&text, "wasi_tcp_host_connections_accepted_total"), Some(3.0), "{text}");
    // The three clients' instances, and the trial before them.
    assert_eq!(sample(&text, "wasi_tcp_host_guest_starts_total"), Some(4.0), "{text}");
    assert_eq!(sample(&text, "wasi_tcp_host_received_bytes_total"), Some(21.0), "{text}");
    let last = clients.pop().unwrap();
    drop(clients);
    wait_for_sample(metrics, "wasi_tcp_host_connections_open", 1.0);
    host.signal(libc::SIGQUIT);
    host.wait_for("SIGQUIT received: the listeners are closed");
    let (status, body) = http_get(metrics, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: stopping: no new clients\n"));
    drop(last);
    assert!(host.wait().0.success());
}

/// A guest writing without end to a client that never reads makes the
/// host hold no more than one send's worth for it (64 KiB), not the
/// gigabytes it writes: a write past what check-write granted traps (the
/// instance is stopped, its client reset); a flood that asks first waits
/// for the client. When --idle-timeout closes that client (nothing moved),
/// its instance is stopped too: it no longer runs, holding its memory.
#[cfg(target_os = "linux")] // reads /proc
fn a_guest_flooding_a_client_that_never_reads_holds_a_send_at_most() {
    let (host, addr) = per_client("stdio-tricks", &["--idle-timeout", "2s"]);
    let mut warm = connect(addr);
    assert!(echo(&mut warm, b"warm up"));
    drop(warm);
    let before = host.memory("VmRSS");
    let mut rude = connect(addr);
    let rude_peer = rude.local_addr().unwrap();
    rude.write_all(b"Z").unwrap();
    host.wait_for("write of more bytes than check-write allowed");
    host.wait_for(&format!("its client {rude_peer} was reset"));
    assert_reset(&mut rude);
    let mut stalled = connect(addr);
    let peer = stalled.local_addr().unwrap();
    stalled.write_all(b"Y").unwrap();
    host.wait_for(&format!("closed the connection of {peer}: nothing received or sent for 2s"));
    host.wait_for(&format!("stopped the instance of client {peer}: its connection is closed"));
    // The rude guest's 8 MiB chunk is its own linear memory (under
    // --max-memory); beyond it the host holds a send (64 KiB) at most, and
    // each instance's bookkeeping: never a copy of the chunk.
    let grown = host.memory("VmHWM").saturating_sub(before);
    println!("the host's peak RSS grew by {} KiB", grown >> 10);
    assert!(grown < 12 << 20, "the host's peak RSS grew by {} MiB\n{}", grown >> 20, host.report());
    let mut after = connect(addr);
    assert!(echo(&mut after, b"still served"), "{}", host.report());
}

/// A per-client swap runs one instance of the new guest, with no client,
/// before it takes over: a guest that traps at start never serves anyone.
/// The swap fails as it does without --per-client (`reload` says why, the
/// host stays ready), and new clients keep getting the old guest.
fn a_per_client_swap_to_a_guest_that_fails_its_trial_keeps_the_old_guest() {
    let runtime = tempfile::tempdir().unwrap();
    let (_dir, file) = installed(&test_guest("echo-stdio"));
    let mut cmd = crate::support::host_command();
    cmd.env("RUNTIME_DIRECTORY", runtime.path());
    cmd.args(["--per-client", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let host = Host::start_command(cmd.arg(&file));
    let (addr, metrics) = (host.per_client_addr(1), host.metrics_addr());
    // The host listens before it loads the guest: the file is replaced
    // only once the first guest runs, or the host would load the trap
    // guest at start and exit (CI's run once hung here, in `reload`).
    host.wait_for("one instance per client (");
    install(&test_guest("trap"), &file);
    let (ok, said) = crate::support::ask_host("reload", runtime.path(), &host);
    assert!(!ok, "{said}\n{}", host.report());
    assert!(said.contains("the new guest cannot serve: its trial instance"), "{said}");
    host.wait_for("swap failed: the new guest cannot serve: its trial instance, with no client");
    let mut client = connect(addr);
    assert!(echo(&mut client, b"the old guest"), "{}", host.report());
    assert_eq!(http_get(metrics, "/readyz").0, 200);
    host.settled();
    assert!(!host.output().contains("new clients get the new guest"), "{}", host.report());
}

/// Guests holding every thread the host has for blocking work (each
/// instance reads a FIFO no one writes, in its granted directory) cannot
/// stall a swap: the host loads the new guest on a thread of its own, and
/// new clients get it.
#[cfg(target_os = "linux")] // reads /proc
fn guests_holding_every_blocking_thread_cannot_stall_a_swap() {
    let data = tempfile::tempdir().unwrap();
    let pipe = std::ffi::CString::new(data.path().join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(pipe.as_ptr(), 0o600) }, 0);
    let (_dir, file) = installed(&test_guest("stdio-tricks"));
    let grant = format!("{}::/data", data.path().display());
    let args = ["--per-client", "--listen", "127.0.0.1:0", "--dir", &grant, "--max-files", "64"];
    // With --allow-dns, the ledger says how many blocking threads there are
    // (a name lookup under way holds one, and a descriptor).
    let host = Host::start(&[&args[..], &["--allow-dns", file.to_str().unwrap()]].concat());
    let addr = host.per_client_addr(1);
    let ledger = host.wait_for("ledger: ");
    let threads: usize = ledger.split("name lookups ").nth(1).unwrap().parse().unwrap();
    let stuck: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut client = connect(addr);
            client.write_all(b"P").unwrap();
            client
        })
        .collect();
    wait_for_threads_in(&host, "wait_for_partner", threads);
    install(&test_guest("echo-stdio"), &file);
    host.signal(libc::SIGHUP);
    host.wait_for("swap: new clients get the new guest");
    let mut client = connect(addr);
    assert!(echo(&mut client, b"the new guest"), "{}", host.report());
    drop(stuck);
}

/// Waits until `n` of the host's threads wait in the kernel function
/// `wchan` (a FIFO's open waits in `wait_for_partner`).
#[cfg(target_os = "linux")]
fn wait_for_threads_in(host: &Host, wchan: &str, n: usize) {
    crate::support::harness::waiting_for(|| format!("{n} host threads in {wchan}"));
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", host.pid())).unwrap();
        let waiting = tasks
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w == wchan))
            .count();
        if waiting >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{waiting} threads in {wchan}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Options that make no sense together are refused with one line.
fn threads_without_per_client_is_refused() {
    let host = Host::start(&["--threads", "2", "--listen", "127.0.0.1:0"]);
    let (status, output) = host.wait();
    assert!(!status.success());
    assert!(output.contains("`threads` applies to `per-client` only"), "{output}");
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    crate::tests![
        the_lesson_guest_echoes_every_client_through_stdin_and_stdout,
        the_environment_names_the_client,
        one_clients_instance_never_sees_anothers_memory,
        a_trap_costs_only_its_own_client,
        memory_and_cpu_limits_apply_to_each_instance,
        an_exit_closes_the_connection_after_what_the_guest_wrote,
        what_the_guest_wrote_is_sent_before_the_connection_closes,
        #[cfg(target_os = "linux")]
        a_client_beyond_the_cap_waits_in_the_backlog_until_a_place_frees,
        a_client_not_allowed_gets_no_instance,
        an_idle_client_is_closed_and_its_instance_ends,
        trace_marks_every_line_with_the_clients_instance,
        sighup_gives_new_clients_the_new_guest,
        sigquit_refuses_new_clients_and_serves_those_connected,
        sigterm_drains_and_a_second_sigterm_stops_at_once,
        #[cfg(target_os = "linux")]
        a_burst_of_clients_leaves_no_memory_behind,
        threads_without_per_client_is_refused,
        #[cfg(target_os = "linux")]
        a_guest_flooding_a_client_that_never_reads_holds_a_send_at_most,
        a_per_client_swap_to_a_guest_that_fails_its_trial_keeps_the_old_guest,
        #[cfg(target_os = "linux")]
        guests_holding_every_blocking_thread_cannot_stall_a_swap,
        a_guest_that_serves_clients_itself_is_named_at_start_and_refused,
        metrics_count_the_clients_and_readiness_ends_with_sigquit,
    ]
}
