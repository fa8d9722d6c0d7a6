//! AWS Lambda mode, chosen when `AWS_LAMBDA_RUNTIME_API` is set.
//!
//! `lambda_http` turns API Gateway REST (v1) and HTTP (v2) events, Function URL and ALB events
//! into one `http::Request`; [`handle`] hands it to the core's route table through the same
//! [`bridge`] as the local server, so every route answers exactly as it does there. A direct
//! invocation whose payload is not an HTTP event reaches us through `lambda_http`'s
//! `pass_through` as `POST /events`; its payload is an Ollama request body, routed by shape
//! ([`direct_path`]), and the answer is the JSON body itself.
//!
//! Models are loaded once by `main` during the init phase; a failure there is reported to
//! `/runtime/init/error` ([`report_init_error`]) before the process exits.

use std::convert::Infallible;
use std::sync::Arc;

use embedfn_core::{App, Backend};
use lambda_http::request::RequestContext;
use lambda_http::{service_fn, Body, Request, RequestExt, Response};

use crate::bridge;

/// The variables `lambda_runtime` needs (it panics when one is missing, so they are checked
/// first).
const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// The Runtime API address when running inside Lambda.
pub fn runtime_api() -> Option<String> {
    std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Polls the Runtime API for invocations until the process is stopped. With
/// `AWS_LAMBDA_MAX_CONCURRENCY` above 1 (Lambda Managed Instances) that many invocations run at
/// once (`lambda_http::run_concurrent`), each on a blocking thread, so that concurrent
/// invocations meet in the dynamic batcher; otherwise one at a time, as on classic Lambda.
pub async fn run<B: Backend + 'static>(app: App<B>) -> Result<(), String> {
    if let Some(missing) = RUNTIME_VARS.iter().find(|v| std::env::var_os(v).is_none()) {
        return Err(format!("{missing} is not set: not a Lambda environment"));
    }
    let app = Arc::new(app);
    lambda_http::run_concurrent(service_fn(move |event: Request| {
        let app = app.clone();
        async move {
            let response = tokio::task::spawn_blocking(move || handle(&app, &event))
                .await
                .unwrap_or_else(|_| {
                    let e = embedfn_core::Error::Backend("the handler panicked".into());
                    bridge::respond(
                        embedfn_core::router::error_reply(embedfn_core::api::Api::Ollama, &e),
                        |bytes| Body::Text(String::from_utf8_lossy(&bytes).into_owned()),
                    )
                });
            Ok::<_, Infallible>(response)
        }
    }))
    .await
    .map_err(|e| format!("Lambda runtime: {e}"))
}

/// Answers one Lambda HTTP event (or direct invocation) through the core's route table.
pub fn handle<B: Backend>(app: &App<B>, event: &Request) -> Response<Body> {
    let body: &[u8] = event.body();
    let reply = match event.request_context_ref() {
        Some(RequestContext::PassThrough) => bridge::answer(
            app,
            &http::Method::POST,
            direct_path(body),
            event.headers(),
            body,
        ),
        context => bridge::answer(
            app,
            event.method(),
            &route_path(event.raw_http_path(), event.uri().path(), context),
            event.headers(),
            body,
        ),
    };
    bridge::respond(reply, |bytes| match String::from_utf8(bytes) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    })
}

/// The route a direct invocation's Ollama body means: a rerank when it has `documents`, the
/// legacy single-prompt endpoint when it has `prompt` and no `input`, else `/api/embed`.
pub fn direct_path(body: &[u8]) -> &'static str {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return "/api/embed";
    };
    if fields.contains_key("documents") {
        "/api/rerank"
    } else if fields.contains_key("prompt") && !fields.contains_key("input") {
        "/api/embeddings"
    } else {
        "/api/embed"
    }
}

/// The request path without the API Gateway stage: REST events already give it without one;
/// an HTTP API on a named stage puts `/{stage}` in front, which is not part of our routes.
fn route_path(raw: &str, uri_path: &str, context: Option<&RequestContext>) -> String {
    let path = if raw.is_empty() { uri_path } else { raw };
    if let Some(RequestContext::ApiGatewayV2(ctx)) = context {
        if let Some(stage) = ctx.stage.as_deref().filter(|s| *s != "$default") {
            let prefix = format!("/{stage}");
            if let Some(rest) = path.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    return if rest.is_empty() {
                        "/".into()
                    } else {
                        rest.into()
                    };
                }
            }
        }
    }
    path.to_string()
}

/// Tells the Runtime API that init failed (`POST /runtime/init/error`), so Lambda reports the
/// reason instead of a bare exit. Best effort: a failure to report is logged.
pub fn report_init_error(api: &str, message: &str) {
    let url = format!("http://{api}/2018-06-01/runtime/init/error");
    let body = serde_json::json!({
        "errorMessage": message,
        "errorType": "Runtime.InitError",
    });
    if let Err(e) = ureq::post(&url)
        .set("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        tracing::error!("could not report the init error to {url}: {e}");
    }
}

#[cfg(test)]
mod tests;
