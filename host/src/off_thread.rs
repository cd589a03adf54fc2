//! The host's own blocking work (loading a guest, reading its file for
//! `--watch`, reading the policy again) on a thread of its own, never on
//! the async runtime's pool for blocking work: that pool is the guests'
//! too (their file operations and name lookups run there, at most
//! `ledger::BLOCKING_THREADS` at once), and a guest holding all of it (a
//! read from a FIFO, a lookup a name server never answers) must not delay
//! a swap or a reload.

use std::future::Future;

/// Runs `work` on a new thread; the future is its result (Err if the
/// thread could not be started, or `work` panicked).
pub fn run<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, String>> {
    let (done, result) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let _ = done.send(work());
    });
    async move {
        started.map_err(|e| format!("cannot start a thread: {e}"))?;
        result.await.map_err(|_| "the work ended without a result".to_string())
    }
}
