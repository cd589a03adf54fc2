//! One client of the event loop: recv() what arrived, send() it back,
//! never waiting inside a call.
//!
//! Backpressure: a connection holds at most [`MAX_BUFFERED`] bytes that
//! were received but not yet sent, and reads nothing more until they are
//! sent. A client that sends without reading is therefore slowed down by
//! TCP itself, costs at most that much memory, and never stalls the others.

use crate::net::{stream_error, Accepted};
use crate::wasi::io::poll::Pollable;
use crate::wasi::io::streams::StreamError;
use std::net::SocketAddr;

/// The most a connection reads at once, and so the most it buffers.
pub const MAX_BUFFERED: u64 = 64 * 1024;

/// The least a read asks for: the study notes' BUFSIZE. A host may set aside as
/// much memory as a read asks for (wasmtime zeroes it), so asking for 64 KiB
/// to get 64 bytes is wasted work: reads start small, and grow while they
/// come back full.
const MIN_READ: u64 = 512;

/// Whether a connection can go on.
#[derive(PartialEq, Eq)]
pub enum Progress {
    /// Waiting for its pollable again.
    Waiting,
    /// Closed by the client (everything echoed), or failed.
    Done,
}

enum State {
    /// Waiting for bytes to arrive (recv).
    Reading,
    /// Holding bytes not yet written (send): `pending[sent..]`. `drained`:
    /// the read that got them returned less than it asked for, so nothing
    /// more had arrived.
    Writing {
        pending: Vec<u8>,
        sent: usize,
        drained: bool,
    },
    /// The client closed its side and everything was written: waiting for
    /// the last flush to complete before closing ours.
    Flushing,
    Done,
}

/// Fields drop in declaration order: pollables before the streams they
/// watch, streams before their socket.
pub struct Connection {
    readable: Pollable,
    writable: Pollable,
    client: Accepted,
    state: State,
    read_size: u64,
    pub peer: SocketAddr,
}

impl Connection {
    pub fn new(client: Accepted) -> Self {
        Connection {
            readable: client.input.subscribe(),
            writable: client.output.subscribe(),
            peer: client.peer,
            client,
            state: State::Reading,
            read_size: MIN_READ,
        }
    }

    /// What this connection waits for: data to read, or room to write.
    pub fn pollable(&self) -> &Pollable {
        match self.state {
            State::Reading => &self.readable,
            _ => &self.writable,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Its pollable is ready: make all the progress possible without waiting.
    pub fn on_ready(&mut self) -> Progress {
        match self.advance() {
            Ok(progress) => progress,
            Err(e) => {
                eprintln!("[TCP server] {} failed: {e}", self.peer);
                self.state = State::Done;
                Progress::Done
            }
        }
    }

    fn advance(&mut self) -> Result<Progress, String> {
        let (input, output) = (&self.client.input, &self.client.output);
        loop {
            match &mut self.state {
                State::Reading => match input.read(self.read_size) {
                    // Nothing there after all: wait again.
                    Ok(data) if data.is_empty() => return Ok(Progress::Waiting),
                    Ok(data) => {
                        let drained = (data.len() as u64) < self.read_size;
                        self.read_size = next_read_size(self.read_size, data.len());
                        self.state = State::Writing { pending: data, sent: 0, drained };
                    }
                    // recv() == 0: the client is done sending. Finish ours.
                    Err(StreamError::Closed) => {
                        output.flush().map_err(stream_error)?;
                        self.state = State::Flushing;
                    }
                    Err(e) => return Err(format!("recv(): {}", stream_error(e))),
                },
                State::Writing { pending, sent, drained } => {
                    // send(): no more than check-write allows (more traps).
                    let allowed =
                        output.check_write().map_err(|e| format!("send(): {}", stream_error(e)))?;
                    if allowed == 0 {
                        return Ok(Progress::Waiting);
                    }
                    let n =
                        (pending.len() - *sent).min(usize::try_from(allowed).unwrap_or(usize::MAX));
                    output
                        .write(&pending[*sent..*sent + n])
                        .map_err(|e| format!("send(): {}", stream_error(e)))?;
                    output.flush().map_err(|e| format!("send(): {}", stream_error(e)))?;
                    *sent += n;
                    if *sent == pending.len() {
                        // All echoed: free the buffer and read again; after
                        // a short read, only once the pollable says more
                        // has arrived (asking at once would find nothing).
                        let drained = *drained;
                        self.state = State::Reading;
                        if drained {
                            return Ok(Progress::Waiting);
                        }
                    }
                }
                State::Flushing => {
                    // check-write answers again once the flush is complete.
                    match output.check_write() {
                        Ok(0) => return Ok(Progress::Waiting),
                        Ok(_) | Err(StreamError::Closed) => self.state = State::Done,
                        Err(e) => return Err(format!("flush: {}", stream_error(e))),
                    }
                }
                State::Done => return Ok(Progress::Done),
            }
        }
    }
}

/// Doubles the read size after a full read, halves it after a read that
/// used less than a quarter, within MIN_READ..=MAX_BUFFERED.
fn next_read_size(size: u64, got: usize) -> u64 {
    let got = got as u64;
    if got == size {
        (size * 2).min(MAX_BUFFERED)
    } else if got < size / 4 {
        (size / 2).max(MIN_READ)
    } else {
        size
    }
}
