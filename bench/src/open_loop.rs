//! The open loop, wrk2's way: each connection sends a 64-byte message on a
//! fixed schedule, whether or not the echoes of earlier ones have come
//! back, and each echo's latency is counted from the time its message was
//! *scheduled*, not sent. A server that falls behind is charged for the
//! queue it builds, which a closed loop (send, wait, send) hides: there a
//! slow answer only delays the next request (coordinated omission).
//!
//! Message `j` of the whole load is due at `start + j / rate`, on
//! connection `j % n`. One thread does everything: it writes every message
//! that is due, and reads every echo there is, checking each byte. On a
//! core of its own (the servers run on another, `pin.rs`) it never sleeps:
//! it polls `epoll` without waiting, so that neither a message nor an
//! echo's timestamp waits for the thread to wake (tens of microseconds on
//! this machine). Not pinned, it sleeps in `epoll` until an echo comes or
//! a `timerfd` (to the nanosecond: no millisecond timer wheel) says the
//! next message is due. Either way it measures its own lateness: how long
//! after its scheduled time each message was written.

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The size of each message.
const SIZE: usize = 64;
/// What is measured leaves out this first part of the run (connections
/// warming up, the sender getting on its schedule).
const WARM_UP: Duration = Duration::from_millis(500);
/// The most the whole run may take beyond its length, echoes included.
const GRACE: Duration = Duration::from_secs(30);
/// The timer's key in epoll (connections are 0..n).
const TIMER: u64 = u64::MAX;

pub struct Outcome {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// How late the sender wrote messages: its p99.
    pub late_p99: Duration,
    /// Echoes that came back, per second, over the measured part.
    pub echoed_per_s: f64,
}

/// `rate` messages a second in all, over `conns` connections to `addr`,
/// for `length` (the warm-up included), on a thread of its own pinned to
/// the generator's core. An error, a wrong byte, or an echo missing at the
/// end fails it.
pub fn run(addr: SocketAddr, conns: usize, rate: f64, length: Duration) -> Result<Outcome> {
    std::thread::spawn(move || {
        let busy = crate::pin::generator();
        least_timer_slack();
        Load::new(addr, conns, rate, length)?.run(busy)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
}

struct Load {
    streams: Vec<TcpStream>,
    /// Per connection: the next echo expected, and the bytes of it so far.
    expected: Vec<(u64, usize)>,
    /// Per connection: bytes due that the socket had no room for yet; and
    /// the connections that have some.
    unsent: Vec<Vec<u8>>,
    behind: Vec<usize>,
    epoll: OwnedFd,
    timer: OwnedFd,
    start: Instant,
    rate: f64,
    total: u64,
    length: Duration,
    latencies: Histogram<u64>,
    late: Histogram<u64>,
}

impl Load {
    fn new(addr: SocketAddr, conns: usize, rate: f64, length: Duration) -> Result<Load> {
        // SAFETY: epoll_create1 only makes a descriptor.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1")?;
        let timer = owned(
            // SAFETY: timerfd_create only makes a descriptor.
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) },
            "timerfd_create",
        )?;
        watch(&epoll, timer.as_raw_fd(), TIMER)?;
        let mut streams = Vec::with_capacity(conns);
        for c in 0..conns {
            let stream = TcpStream::connect(addr).context("connecting")?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            watch(&epoll, stream.as_raw_fd(), c as u64)?;
            streams.push(stream);
        }
        Ok(Load {
            streams,
            expected: vec![(0, 0); conns],
            unsent: vec![Vec::new(); conns],
            behind: Vec::new(),
            epoll,
            timer,
            start: Instant::now() + Duration::from_millis(20),
            rate,
            total: (rate * length.as_secs_f64()) as u64,
            length,
            latencies: Histogram::new(3)?,
            late: Histogram::new(3)?,
        })
    }

    fn conns(&self) -> u64 {
        self.streams.len() as u64
    }

    /// When message `j` of the whole load is due.
    fn due(&self, j: u64) -> Instant {
        self.start + Duration::from_secs_f64(j as f64 / self.rate)
    }

    fn measured(&self, due: Instant) -> bool {
        due >= self.start + WARM_UP
    }

    /// Echoes a connection gets in all.
    fn count_on(&self, c: u64) -> u64 {
        self.total / self.conns() + u64::from(c < self.total % self.conns())
    }

    fn run(mut self, busy: bool) -> Result<Outcome> {
        let deadline = self.start + self.length + GRACE;
        let mut next = 0u64;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut left: u64 = self.total;
        while left > 0 {
            if Instant::now() > deadline {
                bail!("{left} echoes still missing {GRACE:?} after the load ended");
            }
            // Every message that is due.
            while next < self.total && self.due(next) <= Instant::now() {
                self.send(next)?;
                next += 1;
            }
            self.flush_unsent()?;
            if next < self.total && !busy {
                self.set_timer(self.due(next))?;
            }
            let wait = if busy { 0 } else { 1000 };
            // SAFETY: epoll_wait writes at most `events.len()` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    wait,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("epoll_wait");
            }
            for event in &events[..n as usize] {
                match event.u64 {
                    TIMER => {
                        let mut expirations = [0u8; 8];
                        // SAFETY: reads the timer's 8-byte count.
                        unsafe {
                            libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8)
                        };
                    }
                    c => left -= self.receive(c)?,
                }
            }
        }
        let measured = self.length.saturating_sub(WARM_UP).as_secs_f64();
        let at = |h: &Histogram<u64>, q| Duration::from_nanos(h.value_at_quantile(q));
        Ok(Outcome {
            p50: at(&self.latencies, 0.5),
            p99: at(&self.latencies, 0.99),
            p999: at(&self.latencies, 0.999),
            late_p99: at(&self.late, 0.99),
            echoed_per_s: self.latencies.len() as f64 / measured,
        })
    }

    /// Writes message `j` on its connection (what does not fit waits).
    fn send(&mut self, j: u64) -> Result<()> {
        let (c, k) = (j % self.conns(), j / self.conns());
        let due = self.due(j);
        let bytes = message(c, k);
        let unsent = &mut self.unsent[c as usize];
        if unsent.is_empty() {
            let n = write_some(&mut self.streams[c as usize], &bytes)?;
            if n < SIZE {
                unsent.extend_from_slice(&bytes[n..]);
                self.behind.push(c as usize);
            }
        } else {
            unsent.extend_from_slice(&bytes);
        }
        if self.measured(due) {
            self.late.record(due.elapsed().as_nanos() as u64)?;
        }
        Ok(())
    }

    /// What a full socket held back, written as far as it goes now.
    fn flush_unsent(&mut self) -> Result<()> {
        let mut still = Vec::new();
        for c in std::mem::take(&mut self.behind) {
            let n = write_some(&mut self.streams[c], &self.unsent[c])?;
            self.unsent[c].drain(..n);
            if !self.unsent[c].is_empty() {
                still.push(c);
            }
        }
        self.behind = still;
        Ok(())
    }

    /// Reads connection `c`'s echoes; returns how many were complete.
    fn receive(&mut self, c: u64) -> Result<u64> {
        let mut buf = [0u8; 16 * SIZE];
        let mut done = 0;
        loop {
            let n = match self.streams[c as usize].read(&mut buf) {
                Ok(0) => bail!("connection {c} closed by the server"),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) => return Err(e).with_context(|| format!("reading connection {c}")),
            };
            let now = Instant::now();
            for &byte in &buf[..n] {
                let (k, at) = self.expected[c as usize];
                if byte != message_byte(c, k, at) {
                    bail!("connection {c}: echo {k} is not what was sent");
                }
                if at + 1 < SIZE {
                    self.expected[c as usize].1 = at + 1;
                    continue;
                }
                let due = self.due(k * self.conns() + c);
                if self.measured(due) {
                    self.latencies.record(now.duration_since(due).as_nanos() as u64)?;
                }
                self.expected[c as usize] = (k + 1, 0);
                done += 1;
                if k + 1 > self.count_on(c) {
                    bail!("connection {c}: more echoes than messages");
                }
            }
        }
    }

    /// Wakes `epoll_wait` at `when` (a relative timer, to the nanosecond).
    fn set_timer(&self, when: Instant) -> Result<()> {
        let wait = when.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let value = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads `value`.
        if unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &value, std::ptr::null_mut()) }
            != 0
        {
            return Err(std::io::Error::last_os_error()).context("timerfd_settime");
        }
        Ok(())
    }
}

/// The timer wakes this thread when asked, not up to 50 µs later (Linux's
/// default timer slack).
fn least_timer_slack() {
    // SAFETY: prctl only sets this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1);
    }
}

fn owned(fd: libc::c_int, what: &str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    // SAFETY: a descriptor just made, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn watch(epoll: &OwnedFd, fd: libc::c_int, key: u64) -> Result<()> {
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
    // SAFETY: epoll_ctl reads `event`.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_ctl");
    }
    Ok(())
}

/// As much of `bytes` as the socket takes now.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> Result<usize> {
    match stream.write(bytes) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e).context("sending"),
    }
}

/// Message `k` of connection `c`: its numbers, then a pattern, so that an
/// echo from the wrong place or out of order shows.
fn message(c: u64, k: u64) -> [u8; SIZE] {
    std::array::from_fn(|i| message_byte(c, k, i))
}

/// Byte `i` of message `k` of connection `c`.
fn message_byte(c: u64, k: u64, i: usize) -> u8 {
    match i {
        0..8 => c.to_le_bytes()[i],
        8..16 => k.to_le_bytes()[i - 8],
        _ => (c as u8).wrapping_mul(31).wrapping_add(k as u8).wrapping_add(i as u8),
    }
}
