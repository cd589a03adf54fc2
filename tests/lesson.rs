//! The experiments of docs/lesson.md, one test each, so that the lesson
//! cannot drift from the code. Section numbers refer to the lesson.

use crate::support::guests::test_guest;
use crate::support::traffic::reset;
use crate::support::{assert_echoes, connect, host_command, pattern, Host, PATIENCE};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn iterative() -> String {
    test_guest("guest_iterative").display().to_string()
}

fn serve_iterative(extra: &[&str]) -> (Host, SocketAddr) {
    let guest = iterative();
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(extra);
    args.push(&guest);
    let host = Host::start(&args);
    let addr = host.listen_addr();
    (host, addr)
}

/// Each of `expected` appears in `output`, in this order.
fn assert_in_order(output: &str, expected: &[impl AsRef<str>]) {
    let mut rest = output;
    for expected in expected.iter().map(AsRef::as_ref) {
        let at =
            rest.find(expected).unwrap_or_else(|| panic!("no {expected:?} in order in\n{output}"));
        rest = &rest[at + expected.len()..];
    }
}

fn echo_once(addr: SocketAddr, data: &[u8]) -> TcpStream {
    let mut client = connect(addr);
    client.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    client
}

/// Section 1: `--trace` names each step in both vocabularies.
fn the_trace_shows_each_winsock_call_next_to_its_wasi_function() {
    let (host, addr) = serve_iterative(&["--trace-data"]);
    drop(echo_once(addr, b"hello\n"));
    host.wait_for("closesocket()");
    let output = host.output();
    for expected in [
        "trace: socket()                       = tcp-create-socket.create-tcp-socket(ipv4) -> tcp-socket#",
        "trace: bind(127.0.0.1:0)              = tcp-socket.start-bind(127.0.0.1:0) -> ok [policy: allowed]",
        "= tcp-socket.finish-bind -> ok: bound",
        "trace: listen(backlog=4096)           = tcp-socket.set-listen-backlog-size(4096) -> ok",
        "trace: setsockopt(TCP_NODELAY, 1)     = (not in wasi:sockets: the host sets it, see --nagle) -> ok",
        "= tcp-socket.start-listen -> ok [policy: allowed]",
        "trace: accept() -> 127.0.0.1:",
        "[policy: client allowed]",
        "trace: recv(512) -> 6 bytes           = input-stream.blocking-read(512) -> 6 bytes \"hello\\n\"",
        "= output-stream.check-write -> ",
        "trace: send(6) -> 6                   = output-stream.write(6 bytes) -> ok \"hello\\n\"",
        "= output-stream.blocking-flush -> ok",
        "trace: recv(512) -> 0 (the client closed) = input-stream.blocking-read(512) -> closed",
        "trace: closesocket()                  = [drop] tcp-socket#",
    ] {
        assert!(output.contains(expected), "no {expected:?} in\n{output}");
    }
}

/// Section 1, as the lesson runs it: its command, then a client that
/// connects once the guest waits in accept() and sends `hello`; every
/// line the lesson shows is printed (resource numbers and the client's
/// port as they come), the host's in the order shown.
fn the_trace_is_what_section_1_shows() {
    let (start, connected) = {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("docs/lesson.md")).unwrap();
        let at = text.find("See it live: `--trace`").unwrap();
        let blocks: Vec<&str> = text[at..].split("```").skip(1).step_by(2).take(3).collect();
        let body = |block: &str| block.split_once('\n').unwrap().1.to_string();
        (body(blocks[0]), (body(blocks[1]), body(blocks[2])))
    };
    let run = start.lines().skip(1).collect::<Vec<_>>().join("\n");
    let reserved = crate::support::reserved_addr();
    let host = start_args(&host_args(&run, reserved.addr.port()));
    let addr = host.listen_addr();
    host.wait_for("tcp-socket.accept -> would-block");
    drop(echo_once(addr, b"hello\n"));
    // The guest's stdout comes on a pipe of its own: its last line, then
    // everything before it, has arrived.
    host.wait_for("closesocket()");
    host.wait_for("[TCP server] client disconnected");
    let numbered = normalised(&host.output());
    let port = addr.port().to_string();
    let client = host.wait_for("trace: accept() -> 127.0.0.1:");
    let client = client.split("127.0.0.1:").nth(1).unwrap().split(' ').next().unwrap();
    for sample in [connected.0, connected.1] {
        let sample = normalised(&sample.replace("9000", &port).replace("40112", client));
        assert_lines_shown(&numbered, &sample);
        let host_lines: Vec<&str> =
            sample.lines().filter(|l| l.starts_with("trace:") || l.starts_with("INFO")).collect();
        assert_in_order(&numbered, &host_lines);
    }
}

/// `#5` as `#N` (resource numbers depend on what the guest made before),
/// and runs of spaces as one (the trace pads its columns to the width of
/// the addresses in them).
fn normalised(text: &str) -> String {
    let text = text.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '#' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('N');
        }
    }
    out
}

/// Section 4 (step 2): the poll guest's trace shows each `WSAPoll` over
/// the listener and the clients, and the reads and writes it wakes up for,
/// in that order.
fn the_poll_guests_trace_shows_each_wsapoll() {
    let host = Host::start(&["--trace", "--listen", "127.0.0.1:0"]);
    let addr = host.listen_addr();
    drop(echo_once(addr, b"hello\n"));
    host.wait_for("closesocket()");
    assert_in_order(
        &host.output(),
        &[
            "trace: WSAPoll(1 entries) -> 1        = poll(1 pollables) -> ready [0]",
            "trace: accept() -> 127.0.0.1:",
            "trace: WSAPoll(2 entries) -> 1        = poll(2 pollables) -> ready [1]",
            "trace: recv(512) -> 6 bytes           = input-stream.read(512) -> 6 bytes",
            "= output-stream.check-write -> 65536 (send at most this much)",
            "trace: send(6) -> 6                   = output-stream.write(6 bytes) -> ok",
            "trace: closesocket()                  = [drop] tcp-socket#",
        ],
    );
}

/// Section 1: without `--trace-data`, no byte is shown.
fn the_trace_shows_bytes_only_when_asked() {
    let (host, addr) = serve_iterative(&["--trace"]);
    drop(echo_once(addr, b"secret"));
    host.wait_for("closesocket()");
    let output = host.output();
    assert!(output.contains("recv(512) -> 6 bytes"), "{output}");
    assert!(!output.lines().any(|l| l.contains("trace:") && l.contains("secret")), "{output}");
}

/// What `extract` finds in the English lesson, required to be the same in
/// the Korean one (the code, commands and samples the two share).
fn in_both_lessons<T: PartialEq + std::fmt::Debug>(what: &str, extract: impl Fn(&str) -> T) -> T {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |doc: &str| std::fs::read_to_string(root.join(doc)).unwrap();
    let english = extract(&read("docs/lesson.md"));
    assert_eq!(english, extract(&read("docs/lesson.ko.md")), "the two lessons' {what} differ");
    english
}

/// The Python client a section of the lesson runs (`python3 -c "..."`),
/// the same in both languages, pointed at `server`'s port.
fn lesson_program(section: &str, server: SocketAddr) -> String {
    let program = in_both_lessons(&format!("{section} clients"), |text| {
        let section = &text[text.find(section).unwrap()..];
        let start = section.find("python3 -c \"").unwrap() + "python3 -c \"".len();
        section[start..start + section[start..].find("\"\n```").unwrap()].to_string()
    });
    program.replace("9000", &server.port().to_string())
}

/// Each line of a lesson's sample output is a line the program printed:
/// as it is (the guest's stdout), or a host's line without its time (the
/// lesson leaves the time out, and the level too on `trace:` lines).
fn assert_lines_shown(output: &str, sample: &str) {
    let is_time = |prefix: &str| prefix.ends_with('Z') && prefix.starts_with("20");
    for line in sample.lines().filter(|l| !l.is_empty()) {
        let shown = |printed: &str| {
            let Some(prefix) = printed.strip_suffix(line) else { return false };
            let prefix = prefix.trim_end();
            let untraced = prefix.strip_suffix("INFO").map(str::trim_end);
            prefix.is_empty()
                || is_time(prefix)
                || (line.starts_with("trace:") && untraced.is_some_and(is_time))
        };
        assert!(output.lines().any(shown), "no {line:?} in\n{output}");
    }
}

/// A lesson's Python client, running, its stdin and stdout the test's.
fn spawn_python(program: &str) -> std::process::Child {
    std::process::Command::new("python3")
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running python3")
}

/// Section 5.1: one send of 2000 bytes arrives as several recv()s.
fn partial_reads() {
    let (host, addr) = serve_iterative(&["--trace"]);
    // The lesson's client, as it is printed there, on this server's port:
    // it reads until all 2000 bytes are back.
    let program = lesson_program("### 5.1 ", addr);
    let client = std::process::Command::new("python3").args(["-c", &program]).output();
    let client = client.expect("running python3");
    let printed = String::from_utf8_lossy(&client.stdout);
    assert!(client.status.success(), "{printed}{}", String::from_utf8_lossy(&client.stderr));
    let reads: Vec<usize> =
        printed.lines().map(|l| l.strip_prefix("recv -> ").unwrap().parse().unwrap()).collect();
    assert_eq!(reads.iter().sum::<usize>(), 2000, "{printed}");
    host.wait_for("closesocket()");
    host.settled();
    assert!(!host.output().contains("reset"), "{}", host.report());
    let sizes: Vec<usize> = host
        .output()
        .lines()
        .filter_map(|l| l.split("trace: recv(512) -> ").nth(1))
        .filter_map(|rest| rest.split(" bytes").next()?.parse().ok())
        .collect();
    assert!(sizes.len() >= 4 && sizes.iter().all(|&n| n <= 512), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2000, "{sizes:?}");
}

/// Section 5.2 (and 4): with the step-1 guest, a second client waits in the
/// backlog until the first leaves. A first client that only stops typing
/// (what Ctrl-D does in `nc` without `-N`) keeps the second waiting; one
/// that half-closes (Ctrl-D with `nc -N`) lets it in.
fn a_second_client_waits_behind_the_first() {
    let (host, addr) = serve_iterative(&[]);
    let first = echo_once(addr, b"first\n");
    let mut second = connect(addr);
    second.write_all(b"second\n").unwrap();
    // Proving that nothing comes needs a bounded wait: half a second of
    // silence while the first client stays connected, and silent.
    second.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 7];
    let silent = second.read(&mut buf).unwrap_err();
    assert!(matches!(silent.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{silent}");
    assert_eq!(host.output().matches("client connected").count(), 1, "{}", host.output());

    // `nc -N` after Ctrl-D: a FIN. The guest's recv() returns 0, it closes
    // its side (the first client reads the end), and takes the second.
    first.shutdown(std::net::Shutdown::Write).unwrap();
    let mut first = first;
    assert_eq!(first.read(&mut [0u8; 1]).unwrap(), 0, "the guest closed its side");
    let (one, two) = (first.local_addr().unwrap().port(), second.local_addr().unwrap().port());
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"second\n");
    host.wait_for(&format!("[TCP/127.0.0.1:{two}] second\\n"));

    // The server's side of it, as the lesson shows it.
    assert_in_order(
        &host.output(),
        &[
            format!("[TCP server] client connected: IP address=127.0.0.1 port={one}"),
            format!("[TCP/127.0.0.1:{one}] first\\n"),
            format!("[TCP server] client disconnected: IP address=127.0.0.1 port={one}"),
            format!("[TCP server] client connected: IP address=127.0.0.1 port={two}"),
            format!("[TCP/127.0.0.1:{two}] second\\n"),
        ],
    );
}

/// Section 5.3: the guest is told to bind an address that was not granted.
fn a_denied_bind() {
    let blocks = section_blocks("### 5.3 ");
    let reserved = crate::support::reserved_addr();
    let port = reserved.addr.port().to_string();
    let (status, output) = start_args(&host_args(&blocks[0], reserved.addr.port())).wait();
    assert!(!status.success(), "{output}");
    assert_lines_shown(&output, &blocks[1].replace("9000", &port));
}

/// Section 5.4: a reset ends that client only; what the guest reads about
/// it carries no trace of the host (no host backtrace, even with
/// RUST_BACKTRACE=1).
fn a_client_that_resets() {
    // The lesson's server and client: the client reads its echo, then
    // resets, so the guest is waiting in recv() when the reset comes.
    let blocks = section_blocks("### 5.4 ");
    let mut cmd = host_command();
    cmd.env("RUST_BACKTRACE", "1").args(host_args(blocks[0].lines().next().unwrap(), 0));
    let host = Host::start_command(&mut cmd);
    let addr = host.listen_addr();
    let client = spawn_python(&lesson_program("### 5.4 ", addr)).wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&client.stdout), "b'hi'\n");
    // The guest's stdout and the host's log are two pipes: wait for the
    // last line of each.
    host.wait_for("client disconnected");
    host.wait_for("recv() failed");
    let connected = host.wait_for("[TCP server] client connected: IP address=127.0.0.1 port=");
    let port = connected.rsplit('=').next().unwrap();
    assert_lines_shown(&host.output(), &blocks[1].replace("54548", port));
    assert_echoes(addr, b"next client");

    // A reset while the echo is still on its way ends that client only.
    let mut client = connect(addr);
    client.write_all(&pattern(3000, 22)).unwrap();
    let mut some = [0u8; 100];
    client.read_exact(&mut some).unwrap();
    reset(client);
    host.wait_for_nth("client disconnected", 3);
    assert_echoes(addr, b"next client");

    let output = host.output();
    assert!(!output.contains("backtrace") && !output.contains(".rs:"), "{output}");
}

/// A loopback address reserved for the test (`support::reserved_addr`)
/// whose port no connection uses, not even one an earlier test's host on
/// the same port left in TIME_WAIT: the lesson's `ss` samples show every
/// connection on the port, so one left over would not match them.
#[cfg(target_os = "linux")]
fn quiet_addr() -> crate::support::Reserved {
    loop {
        let reserved = crate::support::reserved_addr();
        let port = reserved.addr.port();
        if !tcp_table().iter().any(|&(local, remote, _)| local == port || remote == port) {
            return reserved;
        }
    }
}

/// `/proc/net/tcp`: (local port, remote port, state) of each IPv4 socket.
#[cfg(target_os = "linux")]
fn tcp_table() -> Vec<(u16, u16, u8)> {
    tcp_table_with_queues()
        .into_iter()
        .map(|(local, remote, state, _)| (local, remote, state))
        .collect()
}

/// The same, with each socket's receive queue: for a listening socket,
/// the connections waiting for accept() (what `ss` shows as Recv-Q).
#[cfg(target_os = "linux")]
fn tcp_table_with_queues() -> Vec<(u16, u16, u8, u32)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex = |field: &str| u32::from_str_radix(field, 16).unwrap();
    let port = |field: &str| hex(field.rsplit(':').next().unwrap()) as u16;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let queues = fields.get(4)?;
            Some((
                port(fields.get(1)?),
                port(fields.get(2)?),
                hex(fields.get(3)?) as u8,
                hex(queues.split(':').nth(1)?),
            ))
        })
        .collect()
}

/// Waits until /proc/net/tcp has a row (local, remote, state) with its
/// receive queue at `queue`.
#[cfg(target_os = "linux")]
fn wait_for_row(local: u16, remote: u16, state: u8, queue: u32) {
    let deadline = Instant::now() + PATIENCE;
    while !tcp_table_with_queues().contains(&(local, remote, state, queue)) {
        assert!(
            Instant::now() < deadline,
            "no row {local} -> {remote} state {state:X} queue {queue}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What `ss` prints for the lesson's command (`ss ... ':9000 ...'`, port
/// 9000 as `port`), or for one of its samples: the state, Recv-Q and
/// Send-Q of each row, sorted. (Addresses are left out: the lesson's
/// server listens on 0.0.0.0, the tests' on 127.0.0.1.)
fn ss_rows(printed: &str) -> Vec<[String; 3]> {
    let mut rows: Vec<[String; 3]> = printed
        .lines()
        .skip(1)
        .filter_map(|row| {
            let mut fields = row.split_whitespace().map(str::to_string);
            Some([fields.next()?, fields.next()?, fields.next()?])
        })
        .collect();
    rows.sort();
    rows
}

/// Runs the lesson's `ss` command on `port` until it prints the rows of
/// `sample` (states change as the kernel gets to them).
fn wait_for_ss(command: &str, port: u16, sample: &str) {
    let command = command.replace("9000", &port.to_string());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = std::process::Command::new("sh").args(["-c", &command]).output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        if ss_rows(&printed) == ss_rows(sample) {
            return;
        }
        assert!(Instant::now() < deadline, "`{command}` printed\n{printed}\nnot\n{sample}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lesson's `ss` command in the section from `heading` on, and the
/// sample rows that follow it (both languages the same).
fn ss_sample(heading: &str) -> (String, Vec<String>) {
    let blocks = section_blocks(heading);
    let command = blocks.iter().find(|b| b.starts_with("ss ")).unwrap().trim().to_string();
    let samples = blocks.iter().filter(|b| b.starts_with("State")).cloned().collect();
    (command, samples)
}

const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0A;
const CLOSE_WAIT: u8 = 0x08;

/// Sections 5.6 and 5.7, and the life of a connection: a client waiting in
/// the step-1 guest's backlog is the LISTEN socket's Recv-Q, and its
/// connection is already ESTABLISHED on the server's side (accept only
/// takes it off the queue); one that closes while it waits is in
/// CLOSE-WAIT until the guest accepts it.
#[cfg(target_os = "linux")] // reads /proc/net/tcp
fn the_backlog_shows_as_recv_q_and_a_client_that_gives_up_there_as_close_wait() {
    let (backlog, listen_sample) = ss_sample("### 5.6 ");
    let (close_wait, close_wait_sample) = ss_sample("### 5.7 ");
    let quiet = quiet_addr();
    let addr = quiet.addr;
    let host = Host::start(&["--listen", &addr.to_string(), &iterative()]);
    host.wait_for(&format!("guest listening on {addr}"));
    let first = echo_once(addr, b"first\n");
    let waiting = connect(addr);
    wait_for_row(addr.port(), 0, LISTEN, 1);
    wait_for_ss(&backlog, addr.port(), &listen_sample[0]);
    let waiting_port = waiting.local_addr().unwrap().port();
    wait_for_row(addr.port(), waiting_port, ESTABLISHED, 0);
    waiting.shutdown(std::net::Shutdown::Write).unwrap();
    // Its queue holds the FIN (one sequence number, still to be read).
    wait_for_row(addr.port(), waiting_port, CLOSE_WAIT, 1);
    wait_for_ss(&close_wait, addr.port(), &close_wait_sample[0]);
    // The first leaves: the guest accepts the second, reads 0, closes.
    drop(first);
    let mut waiting = waiting;
    assert_eq!(waiting.read(&mut [0u8; 1]).unwrap(), 0, "{}", host.report());
    wait_for_row(addr.port(), 0, LISTEN, 0);
}

const TIME_WAIT: u8 = 0x06;

#[cfg(target_os = "linux")]
fn wait_for_time_wait(local: u16, remote: u16) {
    let deadline = Instant::now() + PATIENCE;
    while !tcp_table().contains(&(local, remote, TIME_WAIT)) {
        assert!(Instant::now() < deadline, "no TIME_WAIT for {local} -> {remote}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Section 3 and 5.5: the side that closes first keeps TIME_WAIT; the
/// server binds its port again at once anyway.
#[cfg(target_os = "linux")] // reads /proc/net/tcp
fn time_wait_after_a_client_closes_and_the_server_binds_again_at_once() {
    // Both lessons give these same two steps, each with its `ss` filter.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for doc in ["docs/lesson.md", "docs/lesson.ko.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let start = text.find("### 5.5 ").unwrap();
        let section = &text[start..start + text[start..].find("### 5.6 ").unwrap()];
        for step in [
            "`ss -tan '( dport = :9000 )'`",
            "`ss -tan '( sport = :9000 )'`",
            "Ctrl-C",
            "127.0.0.1:9000      127.0.0.1:",
        ] {
            assert!(section.contains(step), "{doc} 5.5 lacks {step:?}:\n{section}");
        }
    }
    let (states, samples) = ss_sample("### LISTEN, ESTABLISHED, TIME_WAIT");
    let quiet = quiet_addr();
    let addr = quiet.addr;
    let host = Host::start(&["--listen", &addr.to_string()]);
    host.wait_for(&format!("guest listening on {addr}"));
    // Section 3: a client connected, as `ss` shows it...
    let client = echo_once(addr, b"bye");
    wait_for_ss(&states, addr.port(), &samples[0]);
    // ...then the client closes first: its side goes to TIME_WAIT.
    let client_port = client.local_addr().unwrap().port();
    drop(client);
    host.wait_for("client disconnected");
    wait_for_time_wait(client_port, addr.port());
    wait_for_ss(&states, addr.port(), &samples[1]);
    // 5.5's first look, its command and sample: the client's TIME-WAIT.
    let time_waits = section_blocks("### 5.5 ");
    wait_for_ss("ss -tan '( dport = :9000 )'", addr.port(), &time_waits[0]);

    // Now the server closes first (stopped with a client connected): the
    // server's port has a TIME_WAIT connection...
    let connected = echo_once(addr, b"stay");
    let connected_port = connected.local_addr().unwrap().port();
    host.signal(libc::SIGINT); // the lesson's Ctrl-C
    assert!(host.wait().0.success());
    drop(connected);
    wait_for_time_wait(addr.port(), connected_port);
    wait_for_ss("ss -tan '( sport = :9000 )'", addr.port(), &time_waits[1]);

    // ...and a new host binds that port at once.
    let again = Host::start(&["--listen", &addr.to_string()]);
    again.wait_for(&format!("guest listening on {addr}"));
    assert_echoes(addr, b"back again");
}

/// Section 1: the guest's half of the side-by-side code is the guest's
/// real code (each excerpt appears, line for line, in its source, comments
/// aside), and both languages show the same code.
fn the_side_by_side_code_is_the_guests_own() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let source = read("guests/lesson/step1/src/lib.rs");
    // The excerpts leave the comments out.
    let source: Vec<&str> =
        source.lines().map(str::trim).filter(|l| !l.starts_with("//")).collect();
    let code_blocks = |doc: &str| -> Vec<String> {
        let start = doc.find("<table>").expect("a side-by-side table");
        let table = &doc[start..start + doc[start..].find("</table>").unwrap()];
        table.split("```").skip(1).step_by(2).map(str::to_string).collect()
    };
    let english = code_blocks(&read("docs/lesson.md"));
    assert_eq!(english, code_blocks(&read("docs/lesson.ko.md")), "the two lessons differ");
    let rust: Vec<&String> = english.iter().filter(|b| b.starts_with("rust\n")).collect();
    assert!(rust.len() >= 9, "{rust:?}");
    for block in rust {
        let lines: Vec<&str> = block.lines().skip(1).map(str::trim).collect();
        let found = source.windows(lines.len()).any(|window| window == lines.as_slice());
        assert!(found, "not in guests/lesson/step1/src/lib.rs:\n{}", lines.join("\n"));
    }
}

/// Both lessons, every other page of docs/ and the README render as
/// CommonMark with GitHub's tables: no `**` left over (a bold span that
/// did not close, as happens when it ends in punctuation and a Korean
/// particle follows), and no table row that fell out of its table.
fn the_lessons_render_cleanly_as_commonmark() {
    use pulldown_cmark::{html, Event, Options, Parser, Tag, TagEnd};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    let pages =
        ["lesson", "lesson.ko", "host", "security", "guests", "deploy", "performance", "tests"];
    for page in pages {
        let page = format!("docs/{page}.md");
        assert!(docs.contains(&page), "{page} is missing: {docs:?}");
    }
    docs.push("README.md".to_string());
    for doc in &docs {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        // The text outside code: code may hold any characters.
        let mut in_code = 0;
        let prose: Vec<Event> = Parser::new_ext(&text, Options::ENABLE_TABLES)
            .filter(|event| {
                match event {
                    Event::Start(Tag::CodeBlock(_)) => in_code += 1,
                    Event::End(TagEnd::CodeBlock) => in_code -= 1,
                    _ => {}
                }
                in_code == 0
                    && !matches!(event, Event::Code(_) | Event::Html(_) | Event::InlineHtml(_))
            })
            .collect();
        let mut rendered = String::new();
        html::push_html(&mut rendered, prose.into_iter());
        for line in rendered.lines() {
            assert!(!line.contains("**"), "{doc}: a bold span did not close: {line}");
            assert!(!line.starts_with("<p>|"), "{doc}: a table row outside its table: {line}");
        }
    }
}

/// "Before you start": both lessons have it, between the introduction and
/// chapter 1, and give the same platform alternatives: the same table rows,
/// the same inline code (commands, flags, error texts), the same keys
/// (Ctrl-D, Ctrl-Z, Ctrl-Break...). The chapters' pointers to it link to
/// its heading's anchor, as many in each language, and each paragraph
/// with one has the same inline code in both.
fn both_lessons_give_the_same_commands_for_linux_macos_and_windows() {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    use std::collections::BTreeSet;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    // GitHub's anchor for a heading: lower case, punctuation dropped,
    // spaces as hyphens (Hangul is kept).
    let anchor = |heading: &str| -> String {
        let kept = heading.to_lowercase().replace(' ', "-");
        format!(
            "#{}",
            kept.chars().filter(|c| c.is_alphanumeric() || *c == '-').collect::<String>()
        )
    };
    let code = |markdown: &str| -> BTreeSet<String> {
        Parser::new_ext(markdown, Options::ENABLE_TABLES)
            .filter_map(|event| match event {
                Event::Code(code) => Some(code.to_string()),
                _ => None,
            })
            .collect()
    };
    struct Lesson {
        rows: Vec<usize>,
        code: BTreeSet<String>,
        keys: BTreeSet<String>,
        pointers: Vec<BTreeSet<String>>,
    }
    let lesson = |doc: &str, heading: &str| -> Lesson {
        let text = read(doc);
        let start = text.find(&format!("\n## {heading}\n")).unwrap_or_else(|| {
            panic!("{doc} has no \"## {heading}\"");
        }) + 1;
        let end = start + text[start..].find("\n## ").unwrap() + 1;
        assert!(
            text[end..].starts_with("## 1. "),
            "{doc}: \"{heading}\" is not right before chapter 1"
        );
        assert!(!text[..start].contains("\n## "), "{doc}: \"{heading}\" is not the first section");
        let section = &text[start..end];
        // The table: its rows, each with a cell per system.
        let rows: Vec<usize> = section
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.matches(" | ").count() + 1)
            .collect();
        let keys = section
            .match_indices("Ctrl-")
            .map(|(at, _)| {
                let rest = &section[at + "Ctrl-".len()..];
                let length = rest
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '\\')
                    .unwrap_or(rest.len());
                format!("Ctrl-{}", &rest[..length])
            })
            .collect();
        // Each paragraph that points back here, by its inline code.
        let target = anchor(heading);
        let (mut pointers, mut paragraph, mut points) = (Vec::new(), BTreeSet::new(), false);
        for event in Parser::new_ext(&text, Options::ENABLE_TABLES) {
            match event {
                Event::Start(Tag::Paragraph) => (paragraph, points) = (BTreeSet::new(), false),
                Event::Start(Tag::Link { dest_url, .. }) if *dest_url == *target => points = true,
                Event::Code(code) => {
                    paragraph.insert(code.to_string());
                }
                Event::End(TagEnd::Paragraph) if points => {
                    pointers.push(std::mem::take(&mut paragraph))
                }
                _ => {}
            }
        }
        Lesson { rows, code: code(section), keys, pointers }
    };
    let english = lesson("docs/lesson.md", "Before you start");
    let korean = lesson("docs/lesson.ko.md", "시작하기 전에");

    assert_eq!(english.rows.len(), 12, "a header, its rule and 10 rows: {:?}", english.rows);
    assert!(
        english.rows.iter().all(|&cells| cells == 4),
        "what, Linux, macOS, Windows: {:?}",
        english.rows
    );
    assert_eq!(english.rows, korean.rows, "the two lessons' tables differ");
    assert_eq!(
        english.code, korean.code,
        "the two lessons' inline code differs in \"Before you start\""
    );
    assert_eq!(
        english.keys, korean.keys,
        "the two lessons name different keys in \"Before you start\""
    );
    for expected in [
        "nc -N 127.0.0.1 9000",
        // macOS's nc sends the FIN by itself; its -N means something else.
        "nc 127.0.0.1 9000",
        "invalid tcp adaptive write timeout value",
        "printf 'hello\\n' | nc -w 1 127.0.0.1 9000",
        "netstat -Lan -p tcp",
        "pkill -9 wasi-tcp-host",
        "taskkill /F /IM wasi-tcp-host.exe",
        "-q 1",
        "ncat 127.0.0.1 9000",
        "ss -tan",
        "netstat -an -p tcp",
        "netstat -ano",
        "System.Net.Sockets.TcpClient",
        "--watch",
        // What the 5.4 test sees, and its counterparts.
        "Connection reset by peer (os error 104)",
        "Connection reset by peer (os error 54)",
        "An existing connection was forcibly closed by the remote host. (os error 10054)",
    ] {
        assert!(
            english.code.contains(expected),
            "no `{expected}` in \"Before you start\": {:?}",
            english.code
        );
    }
    let text = read("docs/lesson.md");
    let connect_row = text.lines().find(|l| l.starts_with("| connect a client |")).unwrap();
    let cells: Vec<&str> = connect_row.split(" | ").collect();
    assert_eq!(cells[2], "`nc 127.0.0.1 9000`", "macOS's nc has no -N of that meaning");
    for key in ["Ctrl-D", "Ctrl-Z", "Ctrl-C", "Ctrl-\\", "Ctrl-Break"] {
        assert!(english.keys.contains(key), "no {key} in \"Before you start\": {:?}", english.keys);
    }
    assert!(english.pointers.len() >= 5, "{:?}", english.pointers);
    assert_eq!(
        english.pointers, korean.pointers,
        "the paragraphs that point to \"Before you start\" differ"
    );
}

/// Section 6 (step 3): the echo client, run by the host like any guest.
fn run_client(server: SocketAddr, extra: &[&str]) -> (bool, String) {
    let client = test_guest("echo_client");
    let server_env = format!("SERVER_ADDR={server}");
    let mut args = vec!["--no-listen", "--env", &server_env];
    args.extend(extra);
    args.push(client.to_str().unwrap());
    args.extend(["--", "hello", "a longer message"]);
    let (status, output) = Host::start(&args).wait();
    (status.success(), output)
}

/// Section 6 as the lesson gives it: its command against a step-1 server,
/// the lines it shows; and without `--allow-connect`, the refusal it shows.
fn the_echo_client_runs_as_section_6_shows() {
    let blocks = section_blocks("## 6. ");
    let reserved = crate::support::reserved_addr();
    let port = reserved.addr.port();
    let server = start_args(&host_args("cargo run -p host -- --listen 127.0.0.1:9000 target/wasm32-wasip2/release/guest_iterative.wasm", port));
    server.wait_for("guest listening on");
    let command = blocks[0].lines().skip(1).collect::<Vec<_>>().join("\n");
    let (status, output) = start_args(&host_args(&command, port)).wait();
    assert!(status.success(), "{output}");
    assert_lines_shown(&output, &blocks[1].replace("9000", &port.to_string()));
    let denied = command.replace("--allow-connect 127.0.0.1:9000 ", "");
    let (status, output) = start_args(&host_args(&denied, port)).wait();
    assert!(!status.success(), "{output}");
    assert_lines_shown(&output, &blocks[2].replace("9000", &port.to_string()));
}

/// Section 6: `SERVER_ADDR` as a name: the client looks it up (with
/// `--allow-dns`) and tries each address, of either family, until one
/// connects: the lesson's command, the server on 127.0.0.1 only.
fn the_echo_client_finds_a_server_by_name_on_either_family() {
    let blocks = section_blocks("## 6. ");
    let command = blocks.iter().find(|b| b.contains("SERVER_ADDR=localhost")).unwrap();
    let reserved = crate::support::reserved_addr();
    let port = reserved.addr.port();
    let server = start_args(&host_args("cargo run -p host -- --listen 127.0.0.1:9000", port));
    server.wait_for("guest listening on");
    let (status, output) = start_args(&host_args(command, port)).wait();
    assert!(status.success(), "{output}");
    assert!(output.contains(&format!("[TCP client] connected to 127.0.0.1:{port}")), "{output}");
    assert!(output.contains("[TCP client] received 5 bytes: hello"), "{output}");
}

/// Section 6: the length in front of each message is in network byte
/// order (big-endian), as the lesson says: read by a server of the test's
/// own, byte by byte.
fn the_step_3_length_prefix_is_in_network_byte_order() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let serving = std::thread::spawn(move || {
        let (mut client, _) = server.accept().unwrap();
        let mut message = [0u8; 9];
        client.read_exact(&mut message).unwrap();
        client.write_all(&message).unwrap();
        message
    });
    let client = test_guest("echo_client");
    let (env, grant) = (format!("SERVER_ADDR={addr}"), addr.to_string());
    let args = ["--no-listen", "--env", &env, "--allow-connect", &grant];
    let client = client.to_str().unwrap();
    let (status, output) = Host::start(&[&args[..], &[client, "--", "hello"]].concat()).wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("[TCP client] received 5 bytes: hello"), "{output}");
    assert_eq!(serving.join().unwrap(), *b"\0\0\0\x05hello");
}

/// Section 6: without `--allow-connect` the client's connect() is denied.
fn the_echo_client_is_refused_until_connect_is_granted() {
    let (_server, addr) = Host::serve(None);
    let (success, output) = run_client(addr, &[]);
    assert!(!success, "{output}");
    assert!(output.contains(&format!("WARN denied: TCP connect to {addr}")), "{output}");
    assert!(
        output.contains("[TCP client] connect() failed: access-denied (Access denied)"),
        "{output}"
    );
}

/// Section 6: with it, the client frames each message with its length and
/// reads the echo back with recvn(), from the step-1 and the step-2 server.
fn the_echo_client_talks_to_the_step_1_and_step_2_servers() {
    let step1 = serve_iterative(&[]);
    let step2 = Host::serve(None);
    for (_server, addr) in [step1, step2] {
        let grant = addr.to_string();
        let (success, output) = run_client(addr, &["--allow-connect", &grant, "--trace"]);
        assert!(success, "{output}");
        // The host's trace (stderr) and the client's lines (stdout), each
        // in its order.
        assert_in_order(
            &output,
            &[
                format!("trace: connect({addr})"),
                format!("tcp-socket.start-connect({addr}) -> ok [policy: allowed]"),
                "= tcp-socket.finish-connect -> connected: input-stream#".to_string(),
            ],
        );
        assert_in_order(
            &output,
            &[
                format!("[TCP client] connected to {addr}"),
                "[TCP client] sent 5 + 4 bytes".to_string(),
                "[TCP client] received 5 bytes: hello".to_string(),
                "[TCP client] sent 16 + 4 bytes".to_string(),
                "[TCP client] received 16 bytes: a longer message".to_string(),
            ],
        );
    }
}

/// Chapter 9, exercise 1: the step-2 guest sending to a client that does
/// not read: check-write answers 0 once the buffers are full, and that
/// client waits while others are served; nothing is lost once it reads.
fn exercise_1_send_waits_on_a_client_that_does_not_read() {
    let blocks = section_blocks("## 9. ");
    let host = start_args(&host_args(blocks[1].lines().next().unwrap(), 0));
    let addr = host.listen_addr();
    // The lesson's client: 32 MiB, more than the client's receive buffer
    // and the host's send buffer hold, sent without reading.
    let program = lesson_program("## 9. ", addr);
    let mut client = spawn_python(&program);
    host.wait_for("output-stream.check-write -> 0 (the send buffer is full");
    drop(echo_once(addr, b"another client"));
    client.stdin.take().unwrap().write_all(b"\n").unwrap();
    let printed = client.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.ends_with("all 33554432 bytes came back\n"), "{printed}");
}

/// Chapter 9, exercise 2: a server that `break`s on a failed accept(), as
/// the study notes do (run with the exercise's command), stops for good
/// when one client resets while it waits in the backlog; the step-1 guest
/// `continue`s and serves the next.
fn exercise_2_break_on_a_failed_accept_stops_the_server() {
    let blocks = section_blocks("## 9. ");
    let commands = blocks.iter().find(|b| b.contains("accept-break.wasm")).unwrap();
    let host = start_args(&host_args(commands.lines().next().unwrap(), 0));
    let addr = host.listen_addr();
    let first = echo_once(addr, b"first");
    // The lesson's client: connects into the backlog, then resets.
    let program = blocks.iter().find(|b| b.contains("SO_LINGER")).unwrap();
    let program = program.split_once("python3 -c \"").unwrap().1;
    let program = program[..program.rfind('"').unwrap()].replace("9000", &addr.port().to_string());
    let said = std::process::Command::new("python3").args(["-c", &program]).output().unwrap();
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
    drop(first);
    let (status, output) = host.wait();
    assert!(status.success(), "{output}");
    assert_in_order(&output, &["accept() failed: ", "leaving the loop", "[TCP server] stopped"]);

    let (host, addr) = serve_iterative(&[]);
    let first = echo_once(addr, b"first");
    reset(connect(addr));
    drop(first);
    host.wait_for("accept() failed");
    drop(echo_once(addr, b"still serving"));
}

/// Chapter 9, exercise 3: a client that half-closes (shutdown(SD_SEND))
/// gets every byte back, then the end of the stream, from either server.
fn exercise_3_a_half_closing_client_gets_every_byte_then_the_end() {
    let blocks = section_blocks("## 9. ");
    let at = blocks.iter().position(|b| b.contains("half-close.wasm")).unwrap();
    for (_server, addr) in [serve_iterative(&[]), Host::serve(None)] {
        let (status, output) = start_args(&host_args(&blocks[at], addr.port())).wait();
        assert!(status.success(), "{output}");
        assert_lines_shown(&output, &blocks[at + 1]);
    }
    // Without SERVER_ADDR it says which server it tries, not a panic.
    let client = test_guest("half-close");
    let (status, output) = Host::start(&["--no-listen", client.to_str().unwrap()]).wait();
    assert!(!status.success(), "{output}");
    assert!(output.contains("[half-close] connect() failed: access-denied"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}

/// Chapter 9, exercise 5: the solution is step 1 with a deadline: it
/// serves on IPv6 as well as IPv4, closes a silent client, and echoes one
/// that speaks in time.
fn exercise_5_the_deadline_serves_ipv6_too() {
    let guest = test_guest("read-timeout");
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        if listen.starts_with('[') && crate::support::need::ipv6().is_err() {
            continue;
        }
        let host = Host::start(&["--listen", listen, guest.to_str().unwrap(), "--", "1"]);
        let addr = host.listen_addr();
        assert_echoes(addr, b"in time");
        let mut silent = connect(addr);
        assert_eq!(silent.read(&mut [0u8; 16]).unwrap(), 0, "a FIN");
        host.wait_for("recv() timed out after 1s: closing");
    }
}

/// Chapter 9, exercise 4: the step-1 guest with the exercise's `--listen`
/// serves IPv6 (a socket of the IPv6 family, an address of 16 bytes that
/// the guest never has to size).
fn exercise_4_the_step_1_guest_serves_ipv6() {
    let listen = inline_code("**4. ", "--listen ");
    let mut args = host_args(&format!("cargo run -p host -- {listen}"), 0);
    args.push(iterative());
    let host = start_args(&args);
    let addr = host.listen_addr();
    assert!(addr.is_ipv6(), "{addr}");
    let client = echo_once(addr, b"six");
    let port = client.local_addr().unwrap().port();
    host.wait_for(&format!("[TCP server] client connected: IP address=::1 port={port}"));
}

/// Section 5.8: TCP carries bytes, not messages. The lesson's client, as
/// printed there: two sends that wait while the guest is busy arrive in
/// one recv(); one line sent in two pieces a second apart arrives in two.
fn tcp_joins_and_splits_what_was_sent() {
    let (host, addr) = serve_iterative(&["--trace"]);
    let first = echo_once(addr, b"busy\n");
    let program = lesson_program("### 5.8 ", addr);
    let mut client = spawn_python(&program);
    let mut printed = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    printed.read_line(&mut line).unwrap();
    assert_eq!(line, "sent one and two: now end the first client\n");
    drop(first);
    let mut rest = String::new();
    printed.read_to_string(&mut rest).unwrap();
    assert!(client.wait().unwrap().success(), "{rest}");
    assert_eq!(rest, "echoed 8 bytes\nechoed 6 bytes\n");
    host.wait_for("trace: recv(512) -> 8 bytes");
    host.wait_for_nth("trace: recv(512) -> 3 bytes", 2);
}

/// Chapter 7: the per-client chapter's command serves two clients at
/// once, each by an instance of its own, and prints the lines the lesson
/// shows (its addresses and ports standing for the real ones); its code
/// excerpt is the guest's own, in both languages.
fn one_instance_per_client_serves_two_clients_at_once() {
    let blocks = section_blocks("## 7. ");
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guests/lesson/per-client/src/main.rs"),
    )
    .unwrap();
    let source: Vec<&str> = source.lines().map(str::trim).collect();
    let code: Vec<&str> = blocks[0].lines().map(str::trim).collect();
    assert!(source.windows(code.len()).any(|w| w == code.as_slice()), "{code:?}");

    let host = start_args(&host_args(blocks[1].lines().nth(1).unwrap(), 0));
    let addr = host.per_client_addr(1);
    let mut first = connect(addr);
    assert!(crate::support::clients::echo(&mut first, b"one"));
    let mut second = connect(addr);
    assert!(crate::support::clients::echo(&mut second, b"two"));
    let (one, two) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    drop(first);
    host.wait_for(&format!("{one}}}: 127.0.0.1 left"));
    let shown: Vec<String> = blocks[2]
        .lines()
        .map(|line| {
            line.strip_prefix("INFO ")
                .unwrap()
                .replace("127.0.0.1:9000", &addr.to_string())
                .replace("127.0.0.1:50312", &one.to_string())
                .replace("127.0.0.1:50318", &two.to_string())
        })
        .collect();
    assert_in_order(&host.output(), &shown);
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    use crate::support::need;
    crate::tests![
        the_trace_shows_each_winsock_call_next_to_its_wasi_function,
        the_poll_guests_trace_shows_each_wsapoll,
        the_trace_shows_bytes_only_when_asked,
        partial_reads,
        a_second_client_waits_behind_the_first,
        a_denied_bind,
        a_client_that_resets,
        #[cfg(target_os = "linux")]
        the_backlog_shows_as_recv_q_and_a_client_that_gives_up_there_as_close_wait
            [needs need::program("ss")],
        #[cfg(target_os = "linux")]
        time_wait_after_a_client_closes_and_the_server_binds_again_at_once
            [needs need::program("ss")],
        the_side_by_side_code_is_the_guests_own,
        the_lessons_render_cleanly_as_commonmark,
        both_lessons_give_the_same_commands_for_linux_macos_and_windows,
        the_echo_client_is_refused_until_connect_is_granted,
        the_step_3_length_prefix_is_in_network_byte_order,
        the_echo_client_runs_as_section_6_shows,
        the_trace_is_what_section_1_shows,
        inspect_shows_the_imports_the_host_links_in,
        failure_the_error_codes_have_three_names,
        failure_two_servers_on_one_port,
        failure_a_client_with_no_server,
        failure_the_server_dies_mid_connection,
        failure_an_idle_client_is_closed,
        failure_a_read_with_a_timeout,
        exercise_6_one_bad_client_costs_one_connection,
        every_chapter_ends_with_what_the_learner_can_now_explain,
        the_echo_client_talks_to_the_step_1_and_step_2_servers,
        exercise_1_send_waits_on_a_client_that_does_not_read,
        exercise_2_break_on_a_failed_accept_stops_the_server,
        exercise_3_a_half_closing_client_gets_every_byte_then_the_end,
        exercise_5_the_deadline_serves_ipv6_too,
        the_echo_client_finds_a_server_by_name_on_either_family,
        #[cfg(target_os = "linux")]
        an_idle_client_closed_by_the_host_leaves_fin_wait_2_and_close_wait,
        exercise_4_the_step_1_guest_serves_ipv6 [needs need::ipv6()],
        tcp_joins_and_splits_what_was_sent,
        one_instance_per_client_serves_two_clients_at_once,
    ]
}

/// Exercise 6: the guest with a bug under `--restart on-failure`, the
/// lesson's command: the client that sends `!` reads 0; the one waiting in
/// the backlog is served by the restarted guest.
fn exercise_6_one_bad_client_costs_one_connection() {
    let command = in_both_lessons("exercise 6 commands", |text| {
        let at = text.find("--restart on-failure \\\n").unwrap();
        let start = text[..at].rfind("cargo run").unwrap();
        text[start..at + text[at..].find(".wasm").unwrap() + 5].to_string()
    });
    let host = start_args(&host_args(&command, 0));
    let addr = host.listen_addr();
    let mut first = echo_once(addr, b"first");
    let mut second = connect(addr);
    second.write_all(b"waiting\n").unwrap();
    first.write_all(b"!").unwrap();
    assert_eq!(first.read(&mut [0u8; 16]).unwrap(), 0, "a FIN");
    host.wait_for("restarting it in 100ms");
    let mut back = [0u8; 8];
    second.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"waiting\n");
}

/// Section 2: the command that shows a component's imports, as both
/// lessons give it, lists the step-1 guest's wasi:sockets imports.
fn inspect_shows_the_imports_the_host_links_in() {
    let command = inline_code("> - `#pragma comment(lib", "cargo run -p host -- inspect");
    let (status, output) = start_args(&host_args(&command, 0)).wait();
    assert!(status.success(), "{output}");
    assert!(
        output.contains("wasi:sockets@0.2.12: network, instance-network, tcp, tcp-create-socket"),
        "{output}"
    );
}

/// The code blocks of a section of the lesson (from `heading` to the next
/// heading of its level or above), the same in both languages.
fn section_blocks(heading: &str) -> Vec<String> {
    in_both_lessons(&format!("{heading:?} code"), |text| {
        let start = text.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
        let rest = &text[start + heading.len()..];
        let end = rest.find("\n## ").into_iter().chain(rest.find("\n### ")).min();
        let section = &rest[..end.unwrap_or(rest.len())];
        let fenced = section.split("```").skip(1).step_by(2);
        fenced.map(|block| block.split_once('\n').unwrap().1.to_string()).collect::<Vec<_>>()
    })
}

/// The `code` in the paragraph that starts with `paragraph` which starts
/// with `starts`, the same in both lessons; a line break inside it is a
/// space, as it is when Markdown shows it (and in a block quote, the next
/// line's `>` is not part of it).
fn inline_code(paragraph: &str, starts: &str) -> String {
    in_both_lessons(&format!("{paragraph:?}'s `{starts}...`"), |text| {
        let at = text.find(&format!("\n{paragraph}")).unwrap_or_else(|| panic!("no {paragraph:?}"));
        let rest = &text[at + 1..];
        let rest = &rest[..rest.find("\n\n").unwrap_or(rest.len())];
        let mut codes = rest.split('`').skip(1).step_by(2).map(|code| {
            let words = code.split_whitespace().map(|word| word.trim_start_matches('>'));
            words.filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
        });
        codes.find(|code| code.starts_with(starts)).expect(starts)
    })
}

/// The host's arguments in a lesson command (`cargo run -p host -- ...`,
/// continued over `\` lines), with port 9000 made `port` and each
/// `target/wasm32-wasip2/release/NAME.wasm` the test build of that guest.
fn host_args(command: &str, port: u16) -> Vec<String> {
    let command = command.replace("\\\n", " ");
    let args = command.trim().strip_prefix("cargo run -p host -- ").expect(&command);
    let release = "target/wasm32-wasip2/release/";
    // Words, and "quoted words" as one argument, as a shell splits them.
    let words = args.split('"').enumerate().flat_map(|(at, part)| match at % 2 {
        0 => part.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
        _ => vec![part.to_string()],
    });
    words
        .map(|arg| match arg.strip_prefix(release).and_then(|a| a.strip_suffix(".wasm")) {
            Some(name) => test_guest(name).display().to_string(),
            None => arg.replace("9000", &port.to_string()),
        })
        .collect()
}

fn start_args(args: &[String]) -> Host {
    Host::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Section 8.1: every error code the table names is one of wasi:sockets'
/// (its WIT), the ones the lesson promises are there, and both languages
/// give each the same WinSock and Unix names.
fn failure_the_error_codes_have_three_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wit = std::fs::read_to_string(root.join("wit/deps/sockets/sockets.wit")).unwrap();
    let enum_body = &wit[wit.find("enum error-code {").unwrap()..];
    let enum_body = &enum_body[..enum_body.find('}').unwrap()];
    let codes: Vec<&str> = enum_body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && l.ends_with(','))
        .map(|l| l.trim_end_matches(','))
        .collect();
    let rows = |doc: &str| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let section = &text[text.find("### 8.1 ").unwrap()..text.find("### 8.2 ").unwrap()];
        section
            .lines()
            .filter(|l| l.starts_with("| `") && !l.starts_with("| `error-code`"))
            .map(|row| row.split('`').skip(1).step_by(2).map(str::to_string).collect())
            .collect()
    };
    let english = rows("docs/lesson.md");
    assert_eq!(english, rows("docs/lesson.ko.md"), "the two lessons' error tables differ");
    for row in &english {
        assert!(codes.contains(&row[0].as_str()), "{} is not a wasi:sockets error-code", row[0]);
    }
    for promised in [
        "access-denied",
        "address-in-use",
        "connection-refused",
        "connection-reset",
        "would-block",
        "invalid-state",
        "timeout",
        "new-socket-limit",
    ] {
        assert!(english.iter().any(|row| row[0] == promised), "no {promised} in the table");
    }
    // The table agrees with the sections that speak of the same errors.
    let text = std::fs::read_to_string(root.join("docs/lesson.md")).unwrap();
    let table = &text[text.find("### 8.1 ").unwrap()..text.find("### 8.2 ").unwrap()];
    let row = |code: &str, with: &str| -> &str {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| `{code}`")) && l.contains(with))
            .unwrap_or_else(|| panic!("no {code} row with {with:?}"))
    };
    // A client that resets before it is accepted: WinSock's accept fails
    // with WSAECONNRESET (section 2), BSD's with ECONNABORTED; WinSock's
    // WSAECONNABORTED is its own stack aborting a connection.
    let aborted = row("connection-aborted", "WSAECONNABORTED");
    assert!(aborted.contains("UNP 5.11") && aborted.contains("its own stack"), "{aborted}");
    let reset = row("connection-reset", "before it was accepted");
    assert!(reset.contains("WSAECONNRESET") && reset.contains("Linux"), "{reset}");
    let section_2 = &text[text.find("## 2. ").unwrap()..text.find("## 3. ").unwrap()];
    assert!(section_2.contains("fails with `WSAECONNRESET`"), "section 2 and the table disagree");
    // Keep-alive's failure is a stream's: not `timeout`.
    assert!(!row("timeout", "WSAETIMEDOUT").contains("keep-alive"), "8.1's timeout row");
    let after = &table[table.find("compare names, not numbers").unwrap()..];
    assert!(after.contains("`last-operation-failed`") && after.contains("`WSAENETRESET`"));
    let keep_alive = &text[text.find("### 8.5 ").unwrap()..text.find("### 8.6 ").unwrap()];
    assert!(
        keep_alive.contains("`WSAENETRESET`") && keep_alive.contains("`last-operation-failed`")
    );
    // And `network-error-code`, which section 2 names, is in the WIT, unstable.
    assert!(wit.contains("@unstable(feature = network-error-code)"));
    assert!(wit.contains("network-error-code: func(err: borrow<error>) -> option<error-code>;"));
    assert!(section_2.contains("`network-error-code(error)`"));
}

/// Section 8.2: the lesson's two commands, the second on a port the first
/// holds, and the line it says the second prints.
fn failure_two_servers_on_one_port() {
    let blocks = section_blocks("### 8.2 ");
    let reserved = crate::support::reserved_addr();
    let port = reserved.addr.port();
    let commands: Vec<&str> = blocks[0].lines().collect();
    let first = start_args(&host_args(commands[0], port));
    first.wait_for("guest listening on");
    let (status, output) = start_args(&host_args(commands[1], port)).wait();
    assert!(!status.success(), "{output}");
    let said = blocks[1].trim().replace("9000", &port.to_string());
    assert_eq!(output.lines().last(), Some(said.as_str()), "{output}");
    assert_echoes(first.listen_addr(), b"the first server serves on");
}

/// Section 8.3: the step-3 client with no server where it connects.
fn failure_a_client_with_no_server() {
    let blocks = section_blocks("### 8.3 ");
    let reserved = crate::support::reserved_addr();
    let (status, output) = start_args(&host_args(&blocks[0], reserved.addr.port())).wait();
    assert!(!status.success(), "{output}");
    let said = blocks[1].trim();
    assert!(output.lines().any(|l| l.ends_with(said)), "{said:?} missing\n{output}");
}

/// Section 8.4: the lesson's client, its server killed (SIGKILL) while it
/// waits: it reads 0 (a FIN), twice, and its next send fails with EPIPE;
/// then the guest with a bug: a client that sends `!` reads 0 too.
fn failure_the_server_dies_mid_connection() {
    let blocks = section_blocks("### 8.4 ");
    let (host, addr) = serve_iterative(&[]);
    let program = lesson_program("### 8.4 ", addr);
    let mut client = spawn_python(&program);
    let mut printed = BufReader::new(client.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("then press Enter\n") {
        assert_ne!(printed.read_line(&mut seen).unwrap(), 0, "{seen}");
    }
    host.signal(libc::SIGKILL);
    drop(host.wait());
    client.stdin.take().unwrap().write_all(b"\n").unwrap();
    printed.read_to_string(&mut seen).unwrap();
    assert!(client.wait().unwrap().success(), "{seen}");
    assert_eq!(seen, blocks[1], "what the lesson says the client prints");

    let reserved = crate::support::reserved_addr();
    let port = reserved.addr.port();
    drop(reserved);
    let host = start_args(&host_args(blocks[2].lines().nth(1).unwrap(), port));
    let mut client = connect(host.listen_addr());
    client.write_all(b"!").unwrap();
    assert_eq!(client.read(&mut [0u8; 16]).unwrap(), 0, "a FIN, not a reset");
    let (status, output) = host.wait();
    assert!(!status.success() && output.contains("error: the guest trapped"), "{output}");
}

/// Section 8.5: `--idle-timeout` closes a client that says nothing with a
/// FIN, and logs the line the lesson shows.
fn failure_an_idle_client_is_closed() {
    let blocks = section_blocks("### 8.5 ");
    let host = start_args(&host_args(&blocks[0], 0));
    let mut client = connect(host.listen_addr());
    let local = client.local_addr().unwrap();
    assert_eq!(client.read(&mut [0u8; 16]).unwrap(), 0, "a FIN");
    let said = blocks[1].trim().replace("127.0.0.1:40112", &local.to_string());
    host.wait_for(said.strip_prefix("INFO ").unwrap());
}

/// Section 8.5: after `--idle-timeout` closes a client that stays open
/// (as netcat-openbsd does), the server's side is in FIN-WAIT-2 and the
/// client's in CLOSE-WAIT, as the lesson's `ss` sample shows.
#[cfg(target_os = "linux")] // reads /proc/net/tcp
fn an_idle_client_closed_by_the_host_leaves_fin_wait_2_and_close_wait() {
    const FIN_WAIT_2: u8 = 0x05;
    let blocks = section_blocks("### 8.5 ");
    let command = blocks.iter().find(|b| b.starts_with("ss ")).unwrap().trim().to_string();
    let sample = blocks.iter().find(|b| b.starts_with("State")).unwrap();
    let quiet = quiet_addr();
    let host = start_args(&host_args(&blocks[0], quiet.addr.port()));
    let addr = host.listen_addr();
    let mut client = connect(addr);
    let local = client.local_addr().unwrap().port();
    assert_eq!(client.read(&mut [0u8; 16]).unwrap(), 0, "a FIN");
    wait_for_row(addr.port(), local, FIN_WAIT_2, 0);
    wait_for_row(local, addr.port(), CLOSE_WAIT, 0);
    wait_for_ss(&command, addr.port(), sample);
    drop(client);
}

/// Section 8.6: the read-timeout guest's excerpt is its own code; a
/// silent client is closed with the lines shown, and one that speaks is
/// served.
fn failure_a_read_with_a_timeout() {
    let blocks = section_blocks("### 8.6 ");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source =
        std::fs::read_to_string(root.join("guests/lesson/exercises/src/bin/read-timeout.rs"))
            .unwrap();
    let source: Vec<&str> = source.lines().map(str::trim).collect();
    let code: Vec<&str> = blocks[0].lines().map(str::trim).collect();
    assert!(source.windows(code.len()).any(|w| w == code.as_slice()), "{code:?}");
    let run = blocks[1].lines().nth(1).unwrap();
    let host = start_args(&host_args(run, 0));
    let addr = host.listen_addr();
    let mut silent = connect(addr);
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap(), 0, "a FIN");
    host.wait_for("client disconnected");
    assert_in_order(&host.output(), &blocks[2].lines().collect::<Vec<_>>());
    assert_echoes(addr, b"spoken in time");
}

/// The lesson opens with its path (read, run, break, fix), and each of
/// chapters 1 to 8 ends with what the learner should now be able to
/// explain, in both languages, naming the same things.
fn every_chapter_ends_with_what_the_learner_can_now_explain() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let endings = |doc: &str, marker: &str| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        (1..=8)
            .map(|n| {
                let start = text.find(&format!("\n## {n}. ")).unwrap();
                let end = start + text[start + 1..].find("\n## ").unwrap() + 1;
                let last = text[start..end].trim_end().rsplit("\n\n").next().unwrap();
                assert!(last.starts_with(marker), "{doc}, chapter {n} ends with {last:?}");
                last.split('`').skip(1).step_by(2).map(str::to_string).collect()
            })
            .collect()
    };
    let english = endings("docs/lesson.md", "**Now you can explain:**");
    let korean = endings("docs/lesson.ko.md", "**이제 설명할 수 있어야 하는 것:**");
    assert_eq!(english, korean, "the chapters' endings name different things");
    let text = std::fs::read_to_string(root.join("docs/lesson.md")).unwrap();
    let opening = &text[..text.find("## Before you start").unwrap()];
    assert!(opening.contains("**The path through it: read, run, break, fix.**"), "{opening}");
}
