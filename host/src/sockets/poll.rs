//! WSAPoll(): `wasi:io/poll.poll`, with a fast answer for the pollables of
//! the host's own TCP sockets and streams.
//!
//! wasmtime-wasi-io answers a poll by building a future for every pollable
//! in the list (two allocations each for a stream), then polling them all:
//! for a server polling its listener and a hundred clients, that is most
//! of the cost of each `poll`. The host knows what its own pollables wait
//! for (a connection readable or writable, a socket's connect or accept),
//! so when every pollable in the list is its own it asks each directly, in
//! one pass that leaves the task's waker with those not ready: no future,
//! no allocation, and the answer at once if any is ready. Woken while it
//! waits, it looks again only at the clients that woke and at what cannot
//! say it woke (a writer, a listener), not at the whole list
//! (`read_wake.rs`): at a thousand clients that second look was on the
//! path of every message that woke the guest. A list with
//! others in it (a timer, stdin) is asked the same way for the host's and
//! the ordinary way for the rest, so a timer is never starved, and if none
//! is ready it waits the ordinary way, in wasmtime-wasi-io. An empty list
//! traps, as the spec says.
//!
//! To know which pollables are its own, the host notes each stream it
//! hands out and each pollable made from one, and forgets them when they
//! are dropped: those are the `subscribe` and drop functions replaced here.

use super::connection::Connection;
use super::read_wake::{new_round, InList, Woken};
use super::{HasTcp, SocketsView, TcpSocket};
use crate::wasi_version::versioned;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::io::poll::{Host as PollHost, HostPollable};
use wasmtime_wasi::p2::bindings::io::streams::{HostInputStream, HostOutputStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

/// What one of the host's pollables (or streams) waits for.
#[derive(Clone)]
pub enum WaitFor {
    Readable(Arc<Connection>),
    Writable(Arc<Connection>),
    /// A TCP socket (by its handle): a connect finishing, a client to accept.
    Socket(u32),
}

/// The host's own streams and pollables, by handle.
#[derive(Default)]
pub struct Waits {
    streams: ByHandle,
    pollables: ByHandle,
    /// Polls answered without waiting, in a row.
    answered_at_once: u32,
    /// The round the host's own polls are in, and the task polling
    /// (`read_wake.rs`): a new task, a new round.
    round: u64,
    task: Option<Waker>,
    /// The call of `poll` under way (each takes the next number), and
    /// what its first look learnt, for its looks after a wake-up.
    call: u32,
    looked: Looked,
    /// Where the connections that woke say they sit in the call's list,
    /// and a list to look again at (kept, to allocate it once).
    woken: Arc<Woken>,
    again: Vec<u32>,
}

/// What a call of `poll` learnt in its first look at the whole list.
#[derive(Default)]
struct Looked {
    /// The round it looked in: a new round means nothing is armed.
    round: u64,
    /// The pollables that cannot say when they wake (a writer, a
    /// listener): looked at again every time.
    unarmed: Vec<u32>,
    /// A connection twice in the list: a wake-up names one place only,
    /// so every look is at the whole list.
    whole: bool,
}

/// How one of the host's pollables answered a look.
struct Answer {
    ready: bool,
    /// Found not ready and armed: its wake-up will name its place.
    armed: bool,
    /// Already stamped with a place in this call: in the list twice.
    twice: bool,
}

/// A guest whose polls are always answered at once (a zero timeout in the
/// list, or a stream that is always writable) never lets the async runtime
/// wait, and the runtime looks for network events only when it waits, or
/// every 61st turn: so after this many such polls in a row, the next one
/// lets it look first (tokio's `yield_now`), and what has arrived
/// meanwhile is seen.
const AT_ONCE_BEFORE_A_LOOK: u32 = 32;

impl Waits {
    pub fn stream(&mut self, rep: u32, wait: WaitFor) {
        self.streams.insert(rep, wait);
    }

    pub fn pollable(&mut self, rep: u32, wait: WaitFor) {
        self.pollables.insert(rep, wait);
    }

    /// The connection behind an output stream, if the stream is the host's.
    pub fn output(&self, rep: u32) -> Option<&Arc<Connection>> {
        match self.streams.get(rep) {
            Some(WaitFor::Writable(conn)) => Some(conn),
            _ => None,
        }
    }
}

/// A map from a resource handle to what it watches. Handles are small
/// indices into the store's resource table, reused once dropped, so a
/// vector indexed by handle does: `poll` looks up every pollable in its
/// list on every call, and this is one bounds check where a hash map
/// hashed each one.
#[derive(Default)]
struct ByHandle(Vec<Option<WaitFor>>);

impl ByHandle {
    fn insert(&mut self, rep: u32, wait: WaitFor) {
        let index = rep as usize;
        if index >= self.0.len() {
            self.0.resize(index + 1, None);
        }
        self.0[index] = Some(wait);
    }

    fn get(&self, rep: u32) -> Option<&WaitFor> {
        self.0.get(rep as usize)?.as_ref()
    }

    fn remove(&mut self, rep: u32) {
        if let Some(slot) = self.0.get_mut(rep as usize) {
            *slot = None;
        }
    }
}

impl Waits {
    /// The round for a poll by `task`: the same while the task is.
    fn round_for(&mut self, task: &Waker) -> u64 {
        if self.round == 0 || !self.task.as_ref().is_some_and(|t| t.will_wake(task)) {
            self.round = new_round();
            self.task = Some(task.clone());
        }
        self.round
    }
}

impl SocketsView<'_> {
    /// Whether the host's own `pollable` is ready, registering `cx` to be
    /// woken when it may be; None for a pollable that is not the host's.
    fn poll_own(&mut self, pollable: u32, cx: &mut Context<'_>) -> wasmtime::Result<Option<bool>> {
        let ready = match self.ctx.waits.pollables.get(pollable) {
            Some(WaitFor::Readable(conn)) => conn.poll_readable(cx),
            Some(WaitFor::Writable(conn)) => conn.poll_writable(cx),
            Some(WaitFor::Socket(socket)) => {
                self.table.get_mut(&Resource::<TcpSocket>::new_borrow(*socket))?.poll_ready(cx)
            }
            None => return Ok(None),
        };
        Ok(Some(ready.is_ready()))
    }

    /// The same for the host's own poll, in its `round`, the pollable at
    /// `place` in the call's list: a connection found not readable in
    /// this round, with no event since, is answered without asking the
    /// runtime, and its wake-up will name its place (`read_wake.rs`).
    fn look(
        &mut self,
        pollable: u32,
        round: u64,
        place: InList,
        cx: &mut Context<'_>,
    ) -> wasmtime::Result<Option<Answer>> {
        let waits = &self.ctx.waits;
        let Some(WaitFor::Readable(conn)) = waits.pollables.get(pollable) else {
            // A writer or a socket: asked the ordinary way, every look.
            let ready = self.poll_own(pollable, cx)?;
            return Ok(ready.map(|ready| Answer { ready, armed: false, twice: false }));
        };
        let twice = conn.stamp_read(place).call() == place.call();
        let ready = conn.poll_readable_in(round, &waits.woken, cx).is_ready();
        Ok(Some(Answer { ready, armed: !ready, twice }))
    }
}

/// poll(list): the ready ones at once if there are any, else a wait.
async fn poll(
    mut view: SocketsView<'_>,
    pollables: Vec<Resource<DynPollable>>,
) -> wasmtime::Result<Vec<u32>> {
    if pollables.is_empty() {
        // The spec: poll traps on an empty list (it could never return).
        wasmtime::bail!("empty poll list");
    }
    if view.ctx.waits.answered_at_once >= AT_ONCE_BEFORE_A_LOOK {
        view.ctx.waits.answered_at_once = 0;
        tokio::task::yield_now().await;
    }
    let mut waited = false;
    let ready = noting_a_wait(&mut waited, answer(&mut view, &pollables)).await?;
    view.ctx.waits.answered_at_once = match waited {
        true => 0,
        false => view.ctx.waits.answered_at_once + 1,
    };
    if let Some(tracer) = &view.ctx.tracer {
        tracer.poll(pollables.len(), &ready);
    }
    Ok(ready)
}

async fn answer(
    view: &mut SocketsView<'_>,
    pollables: &[Resource<DynPollable>],
) -> wasmtime::Result<Vec<u32>> {
    // When every pollable is the host's (the default guest's always are),
    // one pass asks each, leaving the task's waker with those not ready,
    // and answers at once if any is. The first that is not the host's
    // sends the whole list the ordinary way.
    let mut first = true;
    match poll_fn(|cx| wait_own(view, pollables, std::mem::take(&mut first), cx)).await? {
        Some(ready) => Ok(ready),
        None => poll_mixed(view, pollables).await,
    }
}

/// `future`, noting in `waited` whether it had to wait for anything.
async fn noting_a_wait<F: Future>(waited: &mut bool, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        *waited |= poll.is_pending();
        poll
    })
    .await
}

/// A list with others' pollables in it (a timer, stdin): the host's are
/// asked directly and the others the ordinary way; if none is ready, the
/// wait is wasmtime-wasi-io's.
async fn poll_mixed(
    view: &mut SocketsView<'_>,
    pollables: &[Resource<DynPollable>],
) -> wasmtime::Result<Vec<u32>> {
    let mut ready = Vec::new();
    for (index, pollable) in pollables.iter().enumerate() {
        let own = view.poll_own(pollable.rep(), &mut Context::from_waker(Waker::noop()))?;
        let now = match own {
            Some(now) => now,
            None => HostPollable::ready(view.table, Resource::new_borrow(pollable.rep())).await?,
        };
        if now {
            ready.push(u32::try_from(index)?);
        }
    }
    if !ready.is_empty() {
        return Ok(ready);
    }
    let borrowed = pollables.iter().map(|p| Resource::new_borrow(p.rep())).collect();
    PollHost::poll(view.table, borrowed).await
}

/// The ready ones among the host's own pollables, or a wait until there
/// are; None at the first pollable that is not the host's. The `first`
/// look of a call is at the whole list; after a wake-up, in the same
/// round, only at the connections that woke and at what cannot say when
/// it wakes (`read_wake.rs`).
fn wait_own(
    view: &mut SocketsView<'_>,
    pollables: &[Resource<DynPollable>],
    first: bool,
    cx: &mut Context<'_>,
) -> Poll<wasmtime::Result<Option<Vec<u32>>>> {
    let round = view.ctx.waits.round_for(cx.waker());
    let waits = &view.ctx.waits;
    let again = !first && waits.looked.round == round && !waits.looked.whole;
    let answer = match again {
        true => look_again(view, pollables, round, cx),
        false => look_at_all(view, pollables, round, cx),
    };
    match answer {
        Ok(Some(ready)) if ready.is_empty() => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// Every pollable in the list, in a call of its own.
fn look_at_all(
    view: &mut SocketsView<'_>,
    pollables: &[Resource<DynPollable>],
    round: u64,
    cx: &mut Context<'_>,
) -> wasmtime::Result<Option<Vec<u32>>> {
    let waits = &mut view.ctx.waits;
    waits.call = waits.call.wrapping_add(1);
    let call = waits.call;
    waits.woken.clear();
    let mut unarmed = std::mem::take(&mut waits.looked.unarmed);
    unarmed.clear();
    let (mut ready, mut whole) = (Vec::new(), false);
    for (index, pollable) in pollables.iter().enumerate() {
        let index = u32::try_from(index)?;
        let Some(answer) = view.look(pollable.rep(), round, InList::new(call, index), cx)? else {
            return Ok(None);
        };
        if answer.ready {
            ready.push(index);
        } else if !answer.armed {
            unarmed.push(index);
        }
        whole |= answer.twice;
    }
    view.ctx.waits.looked = Looked { round, unarmed, whole };
    Ok(Some(ready))
}

/// After a wake-up: the connections that woke, and the pollables that
/// cannot say when they wake, in the list's order.
fn look_again(
    view: &mut SocketsView<'_>,
    pollables: &[Resource<DynPollable>],
    round: u64,
    cx: &mut Context<'_>,
) -> wasmtime::Result<Option<Vec<u32>>> {
    let waits = &mut view.ctx.waits;
    let call = waits.call;
    let mut again = std::mem::take(&mut waits.again);
    again.clear();
    if !waits.woken.take(call, &mut again) {
        return look_at_all(view, pollables, round, cx);
    }
    again.extend_from_slice(&waits.looked.unarmed);
    again.sort_unstable();
    again.dedup();
    let mut ready = Vec::new();
    for &index in &again {
        // Always in the list: the places are this call's own.
        let Some(pollable) = pollables.get(index as usize) else { continue };
        let Some(answer) = view.look(pollable.rep(), round, InList::new(call, index), cx)? else {
            return Ok(None);
        };
        if answer.ready {
            ready.push(index);
        }
    }
    view.ctx.waits.again = again;
    Ok(Some(ready))
}

pub fn add_to_linker<T: HasTcp>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    let mut io = linker.instance(&versioned("wasi:io/poll"))?;
    io.func_wrap_async(
        "poll",
        |mut store: StoreContextMut<T>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            Box::new(async move { Ok((poll(store.data_mut().tcp(), pollables).await?,)) })
        },
    )?;
    io.resource("pollable", ResourceType::host::<DynPollable>(), |mut store, rep| {
        let view = store.data_mut().tcp();
        view.ctx.waits.pollables.remove(rep);
        HostPollable::drop(view.table, Resource::new_own(rep))
    })?;
    add_streams_to_linker(linker)
}

/// The streams' `subscribe` and drop: the host notes its own.
fn add_streams_to_linker<T: HasTcp>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    let mut streams = linker.instance(&versioned("wasi:io/streams"))?;
    streams.func_wrap(
        "[method]input-stream.subscribe",
        |mut store: StoreContextMut<T>, (stream,): (Resource<DynInputStream>,)| {
            let view = store.data_mut().tcp();
            let wait = view.ctx.waits.streams.get(stream.rep()).cloned();
            let pollable = HostInputStream::subscribe(view.table, stream)?;
            if let Some(wait) = wait {
                view.ctx.waits.pollables.insert(pollable.rep(), wait);
            }
            Ok((pollable,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.subscribe",
        |mut store: StoreContextMut<T>, (stream,): (Resource<DynOutputStream>,)| {
            let view = store.data_mut().tcp();
            let wait = view.ctx.waits.streams.get(stream.rep()).cloned();
            let pollable = HostOutputStream::subscribe(view.table, stream)?;
            if let Some(wait) = wait {
                view.ctx.waits.pollables.insert(pollable.rep(), wait);
            }
            Ok((pollable,))
        },
    )?;
    streams.resource_async(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store, rep| {
            Box::new(async move {
                let view = store.data_mut().tcp();
                view.ctx.waits.streams.remove(rep);
                view.ctx.held_by_streams.remove(&rep);
                HostInputStream::drop(view.table, Resource::new_own(rep)).await
            })
        },
    )?;
    streams.resource_async(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store, rep| {
            Box::new(async move {
                let view = store.data_mut().tcp();
                view.ctx.waits.streams.remove(rep);
                view.ctx.held_by_streams.remove(&rep);
                HostOutputStream::drop(view.table, Resource::new_own(rep)).await
            })
        },
    )?;
    Ok(())
}
