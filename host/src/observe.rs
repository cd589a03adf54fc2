//! `--metrics ADDR:PORT`: the host's own small HTTP server, for operators
//! and their tools, on a listener no guest is granted or can reach:
//!
//! - `GET /metrics`: the metrics (`metrics.rs`), in OpenMetrics' text
//!   format to a client that asks for it (Prometheus does), else in
//!   Prometheus' classic text format (0.0.4, what `promtool check
//!   metrics` and older tools read);
//! - `GET /healthz`: 200 while the host runs;
//! - `GET /readyz`: 200 while a guest serves every granted address and the
//!   host is not stopping, else 503 and why (for a load balancer, or
//!   Kubernetes' readiness probe).
//!
//! A scrape is answered from atomics, never by asking the guest. Health
//! cannot be starved by whoever reaches the port: a connection has
//! [`REQUEST_WITHIN`] to send each request's head (idle between requests
//! included), [`AT_ONCE`] are served at once, and a new connection beyond
//! them closes the oldest, so a probe is always let in; a request head may
//! not exceed [`MAX_REQUEST`] bytes; a failed accept (no descriptor left,
//! say) is tried again after a growing pause, never in a busy loop.

use crate::log_limit::{Kind, LogLines};
use crate::metrics::METRICS;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::task::AbortHandle;

/// Connections served at once; a new one beyond them closes the oldest.
use crate::ledger::METRICS_AT_ONCE as AT_ONCE;
/// How long a connection has to send a request's head (and may sit idle
/// between requests).
const REQUEST_WITHIN: Duration = Duration::from_secs(1);
/// The most a connection's buffer holds (hyper's least; a request of the
/// three endpoints needs a few hundred bytes).
use crate::ledger::MAX_REQUEST;
/// The pauses after a failed accept: from the first, doubled, up to the last.
const ACCEPT_PAUSES: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Whether a guest serves: `Err` says why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Readiness, once the guest is loaded: health is served from the start
/// (compiling a large guest takes a while), and not ready until then.
#[derive(Default)]
pub struct ReadyLater(OnceLock<Readiness>);

impl ReadyLater {
    pub fn set(&self, readiness: Readiness) {
        let _ = self.0.set(readiness);
    }

    fn check(&self) -> Result<(), String> {
        match self.0.get() {
            Some(ready) => ready(),
            None => Err("starting: loading the guest".to_string()),
        }
    }
}

/// The metrics listener: the one handed over by the host this one
/// upgrades, or `addr` bound now; none without `--metrics`.
pub fn listener(
    addr: Option<SocketAddr>,
    given: Option<std::net::TcpListener>,
) -> Result<Option<std::net::TcpListener>> {
    match (addr, given) {
        (None, _) => Ok(None),
        (Some(_), Some(given)) => {
            given.set_nonblocking(true).context("setting the metrics listener non-blocking")?;
            Ok(Some(given))
        }
        (Some(addr), None) => bind(addr).map(Some),
    }
}

/// The endpoints being served, and a copy of their listener for a new
/// host (an upgrade).
pub struct Served {
    task: tokio::task::JoinHandle<()>,
    copy: std::io::Result<socket2::Socket>,
}

impl Served {
    pub fn start(listener: std::net::TcpListener, ready: Arc<ReadyLater>) -> Served {
        let copy = listener.try_clone().map(socket2::Socket::from);
        Served { task: tokio::spawn(serve(listener, ready)), copy }
    }

    /// A copy of the listener, for the new host.
    pub fn handover(&self) -> std::io::Result<socket2::Socket> {
        self.copy.as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?.try_clone()
    }

    /// Stops serving here (the new host serves from the same listener).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Binds the metrics address (an address in use is an error at start).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot serve metrics on {addr} (--metrics)"))?;
    listener.set_nonblocking(true).context("setting the metrics listener non-blocking")?;
    Ok(listener)
}

/// Serves the endpoints until the host exits.
pub async fn serve(listener: std::net::TcpListener, ready: Arc<ReadyLater>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("cannot serve metrics: {e}"),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(event = "metrics", %addr, "serving metrics and health on http://{addr}");
    }
    let open = Arc::new(Open::default());
    let mut pause = ACCEPT_PAUSES.0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                static FAILED: Kind = Kind::warn(
                    LogLines::MetricsAcceptFailed,
                    "failed accepts on the metrics listener",
                );
                if FAILED.admit() {
                    tracing::warn!("the metrics listener could not accept: {e}; trying again");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSES.1);
                continue;
            }
        };
        pause = ACCEPT_PAUSES.0;
        let ready = Arc::clone(&ready);
        let id = open.next_id();
        let (open_, task) = (
            Arc::clone(&open),
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &ready);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_WITHIN)
                    .max_buf_size(MAX_REQUEST)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }),
        );
        open_.add(id, task.abort_handle());
        tokio::spawn(async move {
            let _ = task.await;
            open_.remove(id);
        });
    }
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Open {
    tasks: Mutex<VecDeque<(u64, AbortHandle)>>,
    ids: std::sync::atomic::AtomicU64,
}

impl Open {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// One more; the oldest is closed if there would be more than [`AT_ONCE`].
    fn add(&self, id: u64, task: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.len() >= AT_ONCE {
            if let Some((_, oldest)) = tasks.pop_front() {
                oldest.abort();
            }
        }
        tasks.push_back((id, task));
    }

    fn remove(&self, id: u64) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).retain(|(each, _)| *each != id);
    }
}

fn respond(request: &Request<Incoming>, ready: &ReadyLater) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            METRICS.ready.set(i64::from(ready.check().is_ok()));
            crate::metrics::count_dropped_lines();
            let text = METRICS.encode();
            let accept = request.headers().get(hyper::header::ACCEPT);
            match accept.and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("openmetrics")) {
                true => reply(StatusCode::OK, OPENMETRICS, text),
                false => reply(StatusCode::OK, CLASSIC, classic(&text)),
            }
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match ready.check() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n"))
            }
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the endpoints are /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics' text as Prometheus' classic format: a counter's HELP and
/// TYPE lines name its `_total` samples, and there is no `# EOF`.
fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|line| *line != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|comment| {
            let rest = line.strip_prefix(comment)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{comment}{name}_total {tail}"))
        });
        text += renamed.as_deref().unwrap_or(line);
        text.push('\n');
    }
    text
}

fn reply(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    response
}
