//! A client's connection as an instance's stdin and stdout, for
//! `--per-client`: what inetd does with descriptors 0 and 1.
//!
//! The connection is the same engine as a guest's TCP connection
//! (`connection.rs`, `streams.rs`): stdin is its input stream and stdout
//! its output stream, so a client's bytes take one bounded path whichever
//! way a guest reaches them. A write may not exceed what `check-write`
//! granted (at most 64 KiB, and nothing while an earlier write is still
//! going out); what the system does not take at once waits in one
//! background send, which `--send-timeout` bounds once the guest has let
//! go; `--idle-timeout` closes a connection nothing moved on. Every stdin
//! or stdout handle the guest opens (a Rust program opens one per call)
//! shares the connection; closing a stdout handle is not closing the
//! connection: the host does that when the instance ends
//! (`per_client/client.rs`).

use super::connection::Connection;
use super::streams::{Reader, Writer};
use crate::trace::Tracer;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// One client's connection, as the instance serving it opens its stdin and
/// stdout.
#[derive(Clone)]
pub struct ClientStdio {
    conn: Arc<Connection>,
    tracer: Option<Tracer>,
}

impl ClientStdio {
    pub fn new(conn: &Arc<Connection>, tracer: Option<Tracer>) -> ClientStdio {
        ClientStdio { conn: Arc::clone(conn), tracer }
    }
}

impl IsTerminal for ClientStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for ClientStdio {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(Reader::stdin(&self.conn, self.tracer))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }
}

impl StdoutStream for ClientStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writer::stdout(&self.conn, self.tracer))
    }

    /// For WASI 0.3, which the host does not offer.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

/// The stdin and stdout of a trial instance, one with no client
/// (`per_client/trial.rs`): stdin never has a byte to read, and says when
/// the guest first asks for one (a read, or a wait on its pollable);
/// stdout takes what check-write allows and drops it.
#[derive(Clone, Default)]
pub struct TrialStdio {
    asked: Arc<tokio::sync::Notify>,
}

impl TrialStdio {
    /// Returns once the guest has asked its stdin for a byte.
    pub async fn read_asked(&self) {
        self.asked.notified().await;
    }
}

impl IsTerminal for TrialStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for TrialStdio {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(TrialInput(Arc::clone(&self.asked)))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }
}

impl StdoutStream for TrialStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Dropped { permit: 0 })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct TrialInput(Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl InputStream for TrialInput {
    fn read(&mut self, _size: usize) -> StreamResult<Bytes> {
        self.0.notify_one();
        Ok(Bytes::new())
    }
}

#[async_trait::async_trait]
impl Pollable for TrialInput {
    async fn ready(&mut self) {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Stdout that drops what it is given (at most what check-write granted).
struct Dropped {
    permit: usize,
}

#[async_trait::async_trait]
impl OutputStream for Dropped {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > self.permit {
            return Err(StreamError::trap("write of more bytes than check-write allowed"));
        }
        self.permit -= bytes.len();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.permit = super::streams::MAX_CHUNK;
        Ok(self.permit)
    }
}

#[async_trait::async_trait]
impl Pollable for Dropped {
    async fn ready(&mut self) {}
}
