//! The local HTTP server: every request goes to the core's route table on a blocking thread
//! (inference is CPU-bound), and SIGTERM / SIGINT stop it gracefully: in-flight requests get
//! `SHUTDOWN_GRACE_MS` to finish, then the process exits.
//!
//! What a client can make it spend is bounded:
//! - the body must arrive within `BODY_TIMEOUT_MS` (408), and until it has, the request holds no
//!   slot: a slow or stuck client costs a socket, never a model;
//! - requests that run models (every method but `GET`/`HEAD`) are admitted through the core's
//!   bounded [`Queue`]: at most `MAX_CONCURRENT_REQUESTS` run, at most `MAX_QUEUE` wait, none
//!   longer than `MAX_QUEUE_WAIT_MS`; the rest get a 503 with `Retry-After` at once;
//! - an admitted request runs under a [`Watch`]: when its client disconnects or
//!   `REQUEST_TIMEOUT_MS` passes (504), its work stops at the next forward pass;
//! - if a model's worker stops, `/health` answers 503 and the server exits for its supervisor
//!   to restart it.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request as HttpRequest, Response};
use embedfn_core::deadline::{self, Watch};
use embedfn_core::router::{api_for, body_timeout, error_reply, too_large};
use embedfn_core::settings::Settings;
use embedfn_core::{App, Backend, Error, Reply};

use crate::bridge;
use embedfn_core::admission::Queue;

/// The time limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the whole body to arrive.
    pub body: Duration,
    /// For an admitted request to run.
    pub request: Duration,
}

/// Sets the request's [`Watch`] flag when the request's future ends: its answer given, given
/// up on (the deadline), or dropped because the client's connection closed. Work still running
/// then stops at its next pass.
struct Departure(Arc<AtomicBool>);

impl Drop for Departure {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Answers one HTTP request through the core.
pub async fn handle<B: Backend + 'static>(
    app: Arc<App<B>>,
    queue: Arc<Queue>,
    timeouts: Timeouts,
    req: HttpRequest<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let max = app.limits.max_body_bytes;
    let api = api_for(parts.uri.path());
    let body =
        match tokio::time::timeout(timeouts.body, to_bytes(body, max.saturating_add(1))).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => return into_response(error_reply(api, &too_large(max))),
            Err(_) => return into_response(error_reply(api, &body_timeout(timeouts.body))),
        };
    let permit = if parts.method == Method::GET || parts.method == Method::HEAD {
        None
    } else {
        let admitted = queue.admit().await;
        app.metrics.queue(queue.state());
        match admitted {
            Ok(permit) => Some(permit),
            Err(e) => {
                let path = parts.uri.path().to_string();
                tracing::warn!(path, "{e}");
                return into_response(error_reply(api, &e));
            }
        }
    };
    let metrics = (app.metrics.clone(), queue.clone());
    let watch = Watch {
        deadline: Some(Instant::now() + timeouts.request),
        gone: Arc::default(),
    };
    // Dropped (client gone) or the deadline passed: the work stops at its next pass.
    let departure = Departure(watch.gone.clone());
    let work = tokio::task::spawn_blocking(move || {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let reply = deadline::watch(watch, || {
            bridge::answer(&app, &parts.method, path, &parts.headers, &body)
        });
        drop(permit);
        reply
    });
    let reply = tokio::time::timeout(timeouts.request, work).await;
    drop(departure);
    metrics.0.queue(metrics.1.state());
    let reply = match reply {
        Ok(reply) => reply,
        Err(_) => {
            let e = Error::Timeout(format!(
                "the request ran past {} ms (REQUEST_TIMEOUT_MS); its work was dropped",
                timeouts.request.as_millis()
            ));
            return into_response(error_reply(api, &e));
        }
    };
    match reply {
        Ok(reply) => into_response(reply),
        Err(e) => {
            tracing::error!("request handler failed: {e}");
            into_response(error_reply(
                api,
                &embedfn_core::Error::Backend("internal error while handling the request".into()),
            ))
        }
    }
}

fn into_response(reply: Reply) -> Response<Body> {
    bridge::respond(reply, Body::from)
}

/// Serves `app` on `addr` until SIGTERM or SIGINT (then in-flight requests get the grace
/// period), or until a model's worker stops (an error: the process exits for its supervisor).
pub async fn serve<B: Backend + 'static>(
    app: App<B>,
    addr: &str,
    settings: &Settings,
) -> Result<(), String> {
    let app = Arc::new(app);
    let queue = Arc::new(Queue::new(settings.admission));
    app.metrics.queue(queue.state());
    let timeouts = Timeouts {
        body: settings.body_timeout,
        request: settings.request_timeout,
    };
    let metrics = app.metrics.clone();
    let router = axum::Router::new()
        .fallback(move |req: HttpRequest<Body>| handle(app.clone(), queue.clone(), timeouts, req));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");
    let stop = Arc::new(tokio::sync::Notify::new());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown({
            let stop = stop.clone();
            async move { stop.notified().await }
        })
        .into_future();
    let unhealthy = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(why) = metrics.unhealthy() {
                return why;
            }
        }
    };
    let grace = settings.shutdown_grace;
    tokio::pin!(served);
    let broken = tokio::select! {
        result = &mut served => return result.map_err(|e| e.to_string()),
        () = shutdown_signal() => None,
        why = unhealthy => Some(why),
    };
    tracing::info!(
        grace_ms = grace.as_millis(),
        "shutting down: finishing in-flight requests"
    );
    stop.notify_one();
    if tokio::time::timeout(grace, &mut served).await.is_err() {
        tracing::warn!("requests still running after the grace period; exiting");
    }
    match broken {
        Some(why) => Err(format!("cannot serve any more: {why}")),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
