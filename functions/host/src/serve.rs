//! Serving the component over HTTP/1.1, as `wasmtime serve` and Spin do: a fresh instance per
//! request from a pre-instantiated component on the pooling allocator. A guest trap, or a guest
//! that never answers, becomes a 500 JSON error and the host keeps serving.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use wasmtime::Store;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::guest::{Guest, Host};

/// The pre-instantiated component and what every instance gets.
pub struct Server {
    pub pre: ProxyPre<Host>,
    pub guest: Guest,
}

impl Server {
    /// Serves on `listener` until SIGTERM or SIGINT; requests in flight finish first.
    pub async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => break,
            };
            let server = self.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(socket), service)
                    .await
                {
                    tracing::debug!("connection: {e}");
                }
            });
        }
        tracing::info!("shutting down: finishing in-flight requests");
        while connections.join_next().await.is_some() {}
        Ok(())
    }

    /// One request in a fresh instance.
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<HyperOutgoingBody> {
        let started = Instant::now();
        let response = match self.instance(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::error!("request failed in the component: {e:?}");
                let trap = e.chain().find_map(|c| c.downcast_ref::<wasmtime::Trap>());
                error_response(&match trap {
                    Some(trap) => format!("the component trapped: {trap}"),
                    None => "the component failed to answer".to_string(),
                })
            }
        };
        tracing::debug!(status = %response.status(), us = started.elapsed().as_micros(), "request");
        response
    }

    async fn instance(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> anyhow::Result<Response<HyperOutgoingBody>> {
        let mut store = Store::new(self.pre.engine(), self.guest.store_data()?);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::task::spawn(async move {
            let started = Instant::now();
            let proxy = pre.instantiate_async(&mut store).await?;
            tracing::debug!(us = started.elapsed().as_micros(), "instantiated");
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(anyhow::anyhow!("guest answered an error: {code:?}")),
            Err(_) => {
                let e = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("the guest never set a response"),
                    Ok(Err(e)) => anyhow::Error::from(e),
                    Err(e) => e.into(),
                };
                Err(e)
            }
        }
    }
}

/// A 500 with the Ollama-shaped JSON error body.
fn error_response(message: &str) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            )
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
}
