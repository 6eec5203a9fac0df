//! The daemon's HTTP server for `/metrics` and `/healthz`, with limits: at most
//! [`MAX_CONNECTIONS`] at once (more wait to be accepted), [`HEADER_READ_TIMEOUT`] to send a
//! request's headers, [`REQUEST_TIMEOUT`] for a connection's whole life, one request per
//! connection. It reads only [`Metrics`], never the state database: the gauges that come
//! from there are refreshed by the daemon (`gauges.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header::ACCEPT, header::CONTENT_TYPE, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::telemetry::metrics::{Metrics, OutboxLabels};

/// Connections served at once; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send a request's headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last, its request read and answered.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// At most one warning this often that every connection is taken.
const SATURATION_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Listens on `listen` and serves `/metrics` and `/healthz` from `metrics` until `stopped`
/// resolves; `/healthz` turns 503 when no poll or delivery succeeded within `allowed`.
/// Returns the address actually bound (the system picks the port when it is 0).
pub(crate) async fn start(
    listen: &str,
    metrics: Arc<Metrics>,
    allowed: Duration,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, std::io::Error> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, router(metrics, allowed), stopped));
    Ok(bound)
}

fn router(metrics: Arc<Metrics>, allowed: Duration) -> axum::Router {
    let started = Instant::now();
    let page = Arc::clone(&metrics);
    let metrics_page = move |headers: axum::http::HeaderMap| {
        let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        let (kind, body) = page.exposition(accept.unwrap_or(""));
        async move { ([(CONTENT_TYPE, kind)], body) }
    };
    let health = move || {
        let pending = metrics.outbox.get_or_create(&OutboxLabels::Pending).get();
        let verdict = match metrics.unhealthy(allowed, started.elapsed(), pending) {
            None => (StatusCode::OK, "ok\n".to_string()),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        };
        async move { verdict }
    };
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/healthz", axum::routing::get(health))
}

/// Accepts connections while a slot is free, until `stopped`.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut warned: Option<Instant> = None;
    tokio::pin!(stopped);
    loop {
        if slots.available_permits() == 0
            && warned.is_none_or(|at| at.elapsed() >= SATURATION_WARNING_EVERY)
        {
            tracing::warn!(
                "metrics server: all {MAX_CONNECTIONS} connections taken; more wait until one ends (at most {}s each)",
                REQUEST_TIMEOUT.as_secs()
            );
            warned = Some(Instant::now());
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut stopped => return,
        };
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: let some close.
                tracing::debug!("metrics server: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping a connection that ran out of time closes it.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
}
