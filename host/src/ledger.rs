//! The ledger: everything a guest or a client can make the host hold, as a
//! total the policy allows. Every bound the host enforces is built from the
//! numbers here, and the host says the totals when it starts:
//!
//! ```text
//! INFO ledger: this policy can hold at most 636 MiB and 1089 descriptors ...
//! ```
//!
//! Memory is what the host's process can come to hold beyond its own
//! start-up footprint; descriptors are every file descriptor it may have
//! open. docs/security.md has the table, row by row, with what happens at
//! each bound and the test that proves it. The kernel's socket buffers are
//! not the process's memory: they come on top (`tcp_rmem` and `tcp_wmem`).
//!
//! Only arithmetic here, on numbers (`settings.rs` gives them); no import
//! of anything above the configuration.

/// The most one read returns and one `check-write` grants, on a TCP
/// stream and on a client's stdin and stdout: so also the most a
/// connection holds for a send the system did not take at once.
pub const MAX_CHUNK: usize = 64 << 10;
/// What a connection's state costs besides its unsent bytes (measured:
/// 1.8 KiB of RSS per idle client, its handles and pollables included).
const CONNECTION_STATE: u64 = 2 << 10;
/// The longest line of a guest's stdout or stderr, once escaped; also what
/// one `check-write` on them grants.
pub const MAX_LINE: usize = 4 << 10;
/// The most each of the host's two output queues (the log, the guests'
/// stdout) holds.
pub const QUEUED_BYTES: usize = 2 << 20;
/// The most random bytes one `get-random-bytes` call may ask for (more
/// traps): the host makes them before the guest's memory takes them.
pub const MAX_RANDOM: u64 = 1 << 20;
/// Connections the metrics listener serves at once (a new one beyond them
/// closes the oldest).
pub const METRICS_AT_ONCE: usize = 64;
/// The most a metrics connection's buffer holds (hyper's least).
pub const MAX_REQUEST: usize = 8 << 10;
/// What a metrics connection costs: its buffer, and the response.
const METRICS_CONNECTION: u64 = (MAX_REQUEST as u64) + (32 << 10);
/// Threads for blocking work (a file read, a name lookup, loading a
/// guest): each a lookup's socket at most, and its stack.
pub const BLOCKING_THREADS: usize = 16;
/// What a blocking thread may touch of its stack.
const BLOCKING_STACK: u64 = 256 << 10;
/// The host's own descriptors: stdin, stdout, stderr, the async runtime's,
/// the signals', the spare one (`sockets/spare.rs`), the compiled guests'
/// memory images, a guest file or cache entry being read.
pub const HOST_DESCRIPTORS: usize = 64;
/// Old guest instances that may drain at once after swaps: a swap asked
/// for while this many still drain waits for one to finish.
pub const MAX_DRAINING: usize = 2;
/// Handles a guest may hold for each socket the cap allows (a socket, its
/// two streams, their pollables, and room to spare)...
pub const HANDLES_PER_SOCKET: usize = 8;
/// ...and besides them (stdout, stderr, clocks, timers, files).
pub const HANDLES_BESIDES: usize = 1024;
/// What one handle costs the host (measured: a guest filling tables of
/// 1 824 and 81 024 pollables).
const HANDLE_BYTES: u64 = 140;
/// Table entries (function references) a guest instance may have, over
/// all its tables.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// What one table entry costs the host.
const TABLE_ELEMENT_BYTES: u64 = 8;
/// An instance's stack (wasmtime's async stack: the guest's code and the
/// host calls it makes run on it).
const INSTANCE_STACK: u64 = 2 << 20;
/// An instance's other bookkeeping (its store, its context).
const INSTANCE_BOOKKEEPING: u64 = 1 << 20;

/// The resource table's capacity for one guest instance: the handles it
/// may hold at once, scaled to the socket cap.
pub fn table_capacity(max_connections: usize) -> usize {
    max_connections.saturating_mul(HANDLES_PER_SOCKET).saturating_add(HANDLES_BESIDES)
}

/// What the totals are made of: the policy's numbers.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    pub max_memory: u64,
    pub max_connections: usize,
    /// Files and directories open at once (`--max-files`; 0 without `--dir`).
    pub max_files: usize,
    pub listen_addresses: usize,
    pub metrics: bool,
    pub dns: bool,
    /// `--per-client`, with its threads.
    pub per_client: Option<usize>,
}

impl Terms {
    /// Guest instances alive at once: one serving, one starting (a swap's
    /// or a restart's), and those draining; with `--per-client`, one per
    /// client and a trial.
    pub fn instances(&self) -> usize {
        match self.per_client {
            Some(_) => self.max_connections + 1,
            None => 2 + MAX_DRAINING,
        }
    }

    /// Threads that run guest code (and so host calls) at once.
    fn threads(&self) -> usize {
        self.per_client.unwrap_or(1)
    }

    /// Descriptors besides the guests' sockets: the host's own, its
    /// listeners, files, metrics connections, lookups.
    pub fn descriptors_besides_sockets(&self) -> usize {
        self.descriptor_rows().iter().filter(|r| r.what != SOCKETS).map(|r| r.count).sum()
    }

    /// Memory, row by row.
    pub fn memory_rows(&self) -> Vec<Row> {
        let instances = self.instances() as u64;
        let per_instance = INSTANCE_STACK
            + INSTANCE_BOOKKEEPING
            + MAX_TABLE_ELEMENTS as u64 * TABLE_ELEMENT_BYTES
            + table_capacity(self.max_connections) as u64 * HANDLE_BYTES
            + 2 * MAX_LINE as u64;
        let threads = self.threads() as u64;
        let mut rows = vec![
            Row::new(GUEST_MEMORY, self.guest_memory()),
            Row::new("instances' stacks, tables and handles", per_instance * instances),
            Row::new(
                "connections' unsent bytes and state",
                self.max_connections as u64 * (MAX_CHUNK as u64 + CONNECTION_STATE),
            ),
            Row::new("reads and random bytes under way", threads * (MAX_CHUNK as u64 + MAX_RANDOM)),
            Row::new("log and stdout queues", 2 * QUEUED_BYTES as u64),
            Row::new("blocking threads", BLOCKING_THREADS as u64 * BLOCKING_STACK),
        ];
        if self.metrics {
            let connections = METRICS_AT_ONCE as u64 + 1;
            rows.push(Row::new("metrics connections", connections * METRICS_CONNECTION));
        }
        rows
    }

    /// Descriptors, row by row.
    pub fn descriptor_rows(&self) -> Vec<Row> {
        let mut rows = vec![
            Row::count("the host's own", HOST_DESCRIPTORS),
            Row::count("listeners", self.listen_addresses),
            Row::count(SOCKETS, self.max_connections),
            Row::count("files", self.max_files),
        ];
        if self.metrics {
            rows.push(Row::count("metrics connections", METRICS_AT_ONCE + 1));
        }
        if self.dns {
            rows.push(Row::count("name lookups", BLOCKING_THREADS));
        }
        rows
    }

    /// The guests' linear memory, over every instance alive at once.
    pub fn guest_memory(&self) -> u64 {
        self.max_memory * self.instances() as u64
    }

    pub fn memory(&self) -> u64 {
        self.memory_rows().iter().map(|r| r.bytes).sum()
    }

    pub fn descriptors(&self) -> usize {
        self.descriptor_rows().iter().map(|r| r.count).sum()
    }

    /// The start-up line: the totals, and what makes them.
    pub fn summary(&self) -> String {
        let mib = |bytes: u64| bytes.div_ceil(1 << 20);
        let memory: Vec<String> =
            self.memory_rows().iter().map(|r| format!("{} {} MiB", r.what, mib(r.bytes))).collect();
        let descriptors: Vec<String> = self
            .descriptor_rows()
            .iter()
            .filter(|r| r.count > 0)
            .map(|r| format!("{} {}", r.what, r.count))
            .collect();
        format!(
            "this policy can hold at most {} MiB and {} descriptors; memory: {} ({} guest \
             instances at most); descriptors: {}",
            mib(self.memory()),
            self.descriptors(),
            memory.join(", "),
            self.instances(),
            descriptors.join(", ")
        )
    }
}

/// What a deployment must allow one host process running a policy: the
/// ledger's totals, and what the ledger leaves to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// The ledger's memory, the host's own footprint, and the kernel's
    /// socket buffers as counted here: bytes.
    pub memory: u64,
    pub descriptors: usize,
    /// Threads at most (systemd's TasksMax= counts them).
    pub threads: usize,
}

/// The host's own resident memory at start, before any client: its code,
/// the built-in guest's, the runtime (measured: 12-15 MiB; counted with
/// room for a larger guest's compiled code).
pub const HOST_FOOTPRINT: u64 = 32 << 20;
/// The kernel's socket buffers counted for each connection: what an echo
/// client's traffic keeps queued. The kernel's autotuning (`tcp_rmem`,
/// `tcp_wmem`) may grow a busy connection's well beyond; under memory
/// pressure it shrinks them (`tcp_mem`) rather than fail.
pub const SOCKET_BUFFERS: u64 = 64 << 10;
/// Threads besides the blocking ones and the guests': the main one, the
/// two output writers, the epoch ticker, the file watch, the courier of
/// notifications systemd had no room for (`notify/courier.rs`), and the
/// compiler's (RAYON_NUM_THREADS=4 in the units).
pub const OTHER_THREADS: usize = 6 + COMPILE_THREADS;
/// The compiler's threads the units allow (RAYON_NUM_THREADS).
pub const COMPILE_THREADS: usize = 4;

impl Terms {
    /// What one host process running this policy needs.
    pub fn sizing(&self) -> Sizing {
        let sockets = self.max_connections as u64 * SOCKET_BUFFERS;
        Sizing {
            memory: self.memory() + HOST_FOOTPRINT + sockets,
            descriptors: self.descriptors(),
            threads: OTHER_THREADS + BLOCKING_THREADS + self.per_client.unwrap_or(0),
        }
    }
}

impl Sizing {
    /// The settings that follow, for a systemd unit (where an upgrade runs
    /// the old host and the new one side by side in the unit's cgroup: two
    /// hosts' memory and threads) and for a Kubernetes container (one host:
    /// a rollout starts new pods instead).
    pub fn describe(&self) -> String {
        let mib = |bytes: u64| bytes.div_ceil(1 << 20);
        format!(
            "systemd: MemoryMax={}M LimitNOFILE={} TasksMax={} (an upgrade runs two hosts); \
             Kubernetes: memory {}Mi for requests and limits alike",
            2 * mib(self.memory),
            self.descriptors,
            2 * self.threads,
            mib(self.memory)
        )
    }
}

/// `--ledger`: the rows, the totals, and the deployment's settings.
pub fn describe(terms: &Terms) -> String {
    let mib = |bytes: u64| bytes.div_ceil(1 << 20);
    let mut text = String::from("memory (MiB):\n");
    for row in terms.memory_rows() {
        text += &format!("  {:>8}  {}\n", mib(row.bytes), row.what);
    }
    text += &format!(
        "  {:>8}  in all ({} guest instances at most)\n",
        mib(terms.memory()),
        terms.instances()
    );
    text += "descriptors:\n";
    for row in terms.descriptor_rows().iter().filter(|r| r.count > 0) {
        text += &format!("  {:>8}  {}\n", row.count, row.what);
    }
    text += &format!("  {:>8}  in all\n", terms.descriptors());
    let sizing = terms.sizing();
    text += &format!(
        "one host process needs {} MiB (the ledger, {} MiB of the host's own, {} KiB of socket \
         buffers a connection), {} descriptors and {} threads\n",
        mib(sizing.memory),
        HOST_FOOTPRINT >> 20,
        SOCKET_BUFFERS >> 10,
        sizing.descriptors,
        sizing.threads
    );
    text + &sizing.describe()
}

const GUEST_MEMORY: &str = "guest linear memory";
const SOCKETS: &str = "sockets";

/// One row of the ledger: bytes, or descriptors.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: &'static str,
    pub bytes: u64,
    pub count: usize,
}

impl Row {
    fn new(what: &'static str, bytes: u64) -> Row {
        Row { what, bytes, count: 0 }
    }

    fn count(what: &'static str, count: usize) -> Row {
        Row { what, bytes: 0, count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> Terms {
        Terms {
            max_memory: 128 << 20,
            max_connections: 1024,
            max_files: 0,
            listen_addresses: 1,
            metrics: false,
            dns: false,
            per_client: None,
        }
    }

    #[test]
    fn the_totals_are_the_sums_of_their_rows() {
        let t = terms();
        assert_eq!(t.descriptors(), 64 + 1 + 1024);
        assert_eq!(t.descriptors_besides_sockets(), 65);
        let guest = t.memory_rows()[0].bytes;
        assert_eq!(guest, 4 * (128 << 20), "serving, starting, two draining");
        assert!(t.summary().starts_with("this policy can hold at most "), "{}", t.summary());
    }

    #[test]
    fn per_client_holds_an_instance_per_client_and_a_trial() {
        let t = Terms { per_client: Some(2), max_connections: 10, ..terms() };
        assert_eq!(t.instances(), 11);
        assert_eq!(t.memory_rows()[0].bytes, 11 * (128 << 20));
    }

    #[test]
    fn metrics_and_lookups_add_their_descriptors() {
        let t = Terms { metrics: true, dns: true, max_files: 64, ..terms() };
        assert_eq!(t.descriptors(), 64 + 1 + 1024 + 64 + 65 + 16);
    }
}
