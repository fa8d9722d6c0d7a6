//! The local HTTP server: every request goes to the core's route table on a blocking thread
//! (inference is CPU-bound), and SIGTERM / SIGINT stop it gracefully after in-flight requests.
//!
//! Requests that run models (every method but `GET`/`HEAD`) are admitted through a bounded
//! queue ([`Queue`]): at most `MAX_CONCURRENT_REQUESTS` run, at most `MAX_QUEUE` wait, none
//! longer than `MAX_QUEUE_WAIT_MS`; the rest get a 503 with `Retry-After` at once. The listing
//! and health routes never wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request as HttpRequest, Response};
use embedfn_core::memory::overloaded;
use embedfn_core::metrics::QueueState;
use embedfn_core::router::{api_for, error_reply, too_large};
use embedfn_core::{App, Backend, Error, Reply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bridge;
use embedfn_core::settings::Admission;

/// The bounded queue in front of the worker threads.
#[derive(Debug)]
pub struct Queue {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    rejected: AtomicU64,
    admission: Admission,
}

impl Queue {
    /// A queue with `admission`'s limits.
    pub fn new(admission: Admission) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(admission.max_running)),
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            admission,
        }
    }

    fn state(&self) -> QueueState {
        QueueState {
            running: self.admission.max_running - self.slots.available_permits(),
            waiting: self.waiting.load(Ordering::SeqCst),
            capacity: self.admission.max_queue,
            rejected: self.rejected.load(Ordering::SeqCst),
        }
    }

    fn reject(&self, why: &str) -> Error {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        overloaded(why, self.admission.max_wait)
    }

    /// A slot to run in: at once when one is free, else after waiting in the queue.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.admission.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(self.reject("the request queue is full"));
        }
        let permit =
            tokio::time::timeout(self.admission.max_wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Backend("the server is shutting down".into())),
            Err(_) => Err(self.reject("the request waited too long in the queue")),
        }
    }
}

/// Answers one HTTP request through the core.
pub async fn handle<B: Backend + 'static>(
    app: Arc<App<B>>,
    queue: Arc<Queue>,
    req: HttpRequest<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let max = app.limits.max_body_bytes;
    let api = api_for(parts.uri.path());
    let Ok(body) = to_bytes(body, max.saturating_add(1)).await else {
        return into_response(error_reply(api, &too_large(max)));
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
    let reply = tokio::task::spawn_blocking(move || {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let reply = bridge::answer(&app, &parts.method, path, &parts.headers, &body);
        drop(permit);
        reply
    })
    .await;
    metrics.0.queue(metrics.1.state());
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

/// Serves `app` on `addr` until SIGTERM or SIGINT, admitting requests under `admission`.
pub async fn serve<B: Backend + 'static>(
    app: App<B>,
    addr: &str,
    admission: Admission,
) -> std::io::Result<()> {
    let app = Arc::new(app);
    let queue = Arc::new(Queue::new(admission));
    app.metrics.queue(queue.state());
    let router = axum::Router::new()
        .fallback(move |req: HttpRequest<Body>| handle(app.clone(), queue.clone(), req));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// Resolves on SIGTERM or SIGINT (the native server and embedfn-host stop on it).
pub async fn shutdown_signal() {
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
    tracing::info!("shutting down: finishing in-flight requests");
}
