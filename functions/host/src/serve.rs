//! Serving the component over HTTP/1.1, as `wasmtime serve` and Spin do: a fresh instance per
//! request from a pre-instantiated component on the pooling allocator. A guest trap, or a guest
//! that never answers, becomes a 500 JSON error and the host keeps serving.
//!
//! What a request can cost is bounded as on the native server: the host reads the body first
//! (`MAX_BODY_BYTES`, `BODY_TIMEOUT_MS`), so a slow client holds no instance; the core's
//! bounded [`Queue`] admits model requests (`MAX_CONCURRENT_REQUESTS`, 503 + `Retry-After`
//! beyond); each instance runs on a blocking thread, never on the async workers (its `wasi:nn`
//! compute blocks), and under an epoch deadline: a guest still running after
//! `REQUEST_TIMEOUT_MS` is interrupted (504) and the host keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use wasmtime::Store;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use embedfn_core::admission::Queue;
use embedfn_core::router::{api_for, body_timeout, error_reply, too_large};
use embedfn_core::{Error, Reply};

use crate::compile::EPOCH;
use crate::guest::{Guest, Host};

/// The pre-instantiated component and what every instance gets.
pub struct Server {
    pub pre: ProxyPre<Host>,
    pub guest: Guest,
    /// Admission of model requests.
    pub queue: Queue,
    /// `MAX_BODY_BYTES`.
    pub max_body: usize,
    /// `BODY_TIMEOUT_MS`.
    pub body_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`: the epoch deadline of each instance.
    pub request_timeout: Duration,
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

    /// One request in a fresh instance, once its body is in and it is admitted.
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<HyperOutgoingBody> {
        let started = Instant::now();
        let api = api_for(req.uri().path());
        let (parts, body) = req.into_parts();
        let read = Limited::new(body, self.max_body.saturating_add(1)).collect();
        let body = match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) => return reply_response(error_reply(api, &too_large(self.max_body))),
            Err(_) => return reply_response(error_reply(api, &body_timeout(self.body_timeout))),
        };
        let _permit = if parts.method == hyper::Method::GET || parts.method == hyper::Method::HEAD {
            None
        } else {
            match self.queue.admit().await {
                Ok(permit) => Some(permit),
                Err(e) => return reply_response(error_reply(api, &e)),
            }
        };
        let req = Request::from_parts(parts, body);
        let response = match self.instance(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::error!("request failed in the component: {e:?}");
                let trap = e.chain().find_map(|c| c.downcast_ref::<wasmtime::Trap>());
                let e = match trap {
                    Some(wasmtime::Trap::Interrupt) => Error::Timeout(format!(
                        "the component ran past {} ms (REQUEST_TIMEOUT_MS) and was stopped",
                        self.request_timeout.as_millis()
                    )),
                    Some(trap) => Error::Backend(format!("the component trapped: {trap}")),
                    None => Error::Backend("the component failed to answer".to_string()),
                };
                reply_response(error_reply(api, &e))
            }
        };
        tracing::debug!(status = %response.status(), us = started.elapsed().as_micros(), "request");
        response
    }

    async fn instance(&self, req: Request<Bytes>) -> anyhow::Result<Response<HyperOutgoingBody>> {
        let mut store = Store::new(self.pre.engine(), self.guest.store_data()?);
        // The guest traps once the epoch ticker has passed the request's deadline.
        let ticks = (self.request_timeout.as_millis() / EPOCH.as_millis()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (parts, bytes) = req.into_parts();
        let body = Full::new(bytes).map_err(
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        );
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, Request::from_parts(parts, body))?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The instance runs on a blocking thread: its `wasi:nn` compute blocks, and must not
        // hold up the async workers that accept and read other requests.
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            runtime.block_on(async move {
                let started = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                tracing::debug!(us = started.elapsed().as_micros(), "instantiated");
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
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

/// The core's reply (an error the host answers itself) as a response.
fn reply_response(reply: Reply) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(reply.body))
            .map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            )
            .boxed_unsync(),
    );
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    if let Some(seconds) = reply.retry_after {
        headers.insert(hyper::header::RETRY_AFTER, seconds.into());
    }
    for (name, value) in reply.headers {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
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
