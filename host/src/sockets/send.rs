//! send(): `wasi:io/streams.output-stream.write`, straight from the
//! guest's memory for the host's own TCP streams.
//!
//! wasmtime-wasi-io's `write` copies the guest's bytes into a new vector
//! before the stream sees them. The host's TCP streams hand bytes to the
//! system at once, so for them that copy (and its allocation) is waste: the
//! host's `write` sends from the guest's memory where the bytes lie, and
//! copies only what the system does not take at once (for the background
//! send, `streams.rs`). A write to any other stream (stdout, a file) is
//! wasmtime-wasi-io's, as before, but for one longer than any stream of
//! this host grants (`MAX_CHUNK`): that traps before the host copies it.

use super::{streams, HasTcp};
use crate::ledger::MAX_CHUNK;
use crate::wasi_version::versioned;
use wasmtime::component::{Linker, Resource, WasmList};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::io::streams::{Host as StreamsHost, HostOutputStream};
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::p2::StreamError;

pub fn add_to_linker<T: HasTcp>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.instance(&versioned("wasi:io/streams"))?.func_wrap(
        "[method]output-stream.write",
        |mut store: StoreContextMut<T>,
         (stream, contents): (Resource<DynOutputStream>, WasmList<u8>)| {
            let view = store.data_mut().tcp();
            let result = match view.ctx.waits.output(stream.rep()).cloned() {
                Some(conn) => {
                    let tracer = view.ctx.tracer;
                    streams::write(&conn, tracer, contents.as_le_slice(&store))
                }
                // No stream of this host grants more than MAX_CHUNK: a
                // longer write breaks the contract whatever the stream, and
                // traps before the host copies a byte of it.
                None if contents.len() > MAX_CHUNK => {
                    Err(StreamError::trap("write of more bytes than check-write allowed"))
                }
                None => {
                    let bytes = contents.as_le_slice(&store).to_vec();
                    HostOutputStream::write(store.data_mut().tcp().table, stream, bytes)
                }
            };
            let result = match result {
                Ok(()) => Ok(()),
                // A trap stays a trap; a failure becomes the guest's `error`.
                Err(e) => Err(StreamsHost::convert_stream_error(store.data_mut().tcp().table, e)?),
            };
            Ok((result,))
        },
    )?;
    Ok(())
}
