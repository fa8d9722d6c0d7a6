//! The local HTTP server: every request goes to the core's route table on a blocking thread
//! (inference is CPU-bound), and SIGTERM / SIGINT stop it gracefully after in-flight requests.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{Request as HttpRequest, Response};
use embedfn_core::router::{api_for, error_reply, too_large};
use embedfn_core::{App, Backend, Reply};

use crate::bridge;

/// Answers one HTTP request through the core.
pub async fn handle<B: Backend + 'static>(
    app: Arc<App<B>>,
    req: HttpRequest<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let max = app.limits.max_body_bytes;
    let api = api_for(parts.uri.path());
    let Ok(body) = to_bytes(body, max.saturating_add(1)).await else {
        return into_response(error_reply(api, &too_large(max)));
    };
    let reply = tokio::task::spawn_blocking(move || {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        bridge::answer(&app, &parts.method, path, &parts.headers, &body)
    })
    .await;
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

/// Serves `app` on `addr` until SIGTERM or SIGINT.
pub async fn serve<B: Backend + 'static>(app: App<B>, addr: &str) -> std::io::Result<()> {
    let app = Arc::new(app);
    let router =
        axum::Router::new().fallback(move |req: HttpRequest<Body>| handle(app.clone(), req));
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
