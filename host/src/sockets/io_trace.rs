//! With `--trace`: the wasi:io calls the trace cannot see from inside a
//! stream (`poll` is `poll.rs`'s). `pollable.block` is traced as the wait
//! inside a blocking call; `blocking-flush` is a
//! flush and a wait underneath, so the stream's trace is told its real name.
//! Both delegate to wasmtime-wasi-io's own implementation.

use super::HasTcp;
use crate::trace::calling_as;
use crate::wasi_version::versioned;
use std::future::{poll_fn, Future};
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::io::poll::HostPollable;
use wasmtime_wasi::p2::bindings::io::streams::HostOutputStream;
use wasmtime_wasi::p2::{DynOutputStream, DynPollable};

pub fn add_to_linker<T: HasTcp>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.instance(&versioned("wasi:io/poll"))?.func_wrap_async(
        "[method]pollable.block",
        |mut store: StoreContextMut<T>, (this,): (Resource<DynPollable>,)| {
            Box::new(async move {
                HostPollable::block(store.data_mut().tcp().table, this).await?;
                if let Some(tracer) = &store.data_mut().tcp().ctx.tracer {
                    tracer.block();
                }
                Ok(())
            })
        },
    )?;
    linker.instance(&versioned("wasi:io/streams"))?.func_wrap_async(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<T>, (this,): (Resource<DynOutputStream>,)| {
            Box::new(async move {
                let result = {
                    let table = store.data_mut().tcp().table;
                    let mut flushing =
                        std::pin::pin!(HostOutputStream::blocking_flush(table, this));
                    poll_fn(|cx| calling_as("blocking-flush", || flushing.as_mut().poll(cx))).await
                };
                let result = match result {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        Err(wasmtime_wasi::p2::bindings::io::streams::Host::convert_stream_error(
                            store.data_mut().tcp().table,
                            e,
                        )?)
                    }
                };
                Ok((result,))
            })
        },
    )?;
    Ok(())
}
