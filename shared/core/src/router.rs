//! Dispatch: every adapter (native server, Lambda, Wasm component) turns its request into a
//! [`Request`], calls [`route`], and writes back the [`Reply`]. The row comes from the table in
//! [`crate::routes`]; authorisation, the body limit, the handler's error and its status and
//! shape are decided here, once.

use serde_json::json;

use crate::api::{tei, Api};
use crate::app::{authorize, ApiKey, App};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::routes::{table, Route, When, JSON, NOT_JSON, TEXT};

/// An HTTP request as the core sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// Path, possibly with a query string (ignored).
    pub path: &'a str,
    /// Header names (any case) and values.
    pub headers: &'a [(&'a str, &'a str)],
    /// The raw body.
    pub body: &'a [u8],
}

/// An HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Seconds for a `Retry-After` header (503 when at capacity); every adapter writes it.
    pub retry_after: Option<u32>,
    /// Further headers (CORS, [`crate::cors`]); every adapter writes them.
    pub headers: Vec<(&'static str, String)>,
}

/// Answers one request. Never panics on user input; every failure is a JSON error reply.
pub fn route<B: Backend>(app: &App<B>, req: &Request) -> Reply {
    let started = std::time::Instant::now();
    let (label, mut reply) = dispatch(app, req);
    if reply.headers.is_empty() {
        reply.headers = app.cors.headers(req.headers);
    }
    app.metrics.request(label, reply.status, started.elapsed());
    reply
}

/// The route's table path (the metrics label; `"unknown"` off the table) and its reply.
fn dispatch<B: Backend>(app: &App<B>, req: &Request) -> (&'static str, Reply) {
    let path = normalize(req.path);
    let table = table::<B>();
    let Some(first) = table.iter().find(|r| r.path == path) else {
        // The request's own path (the normalised one of `//` is empty), cut to a readable length.
        let asked = req.path.split(['?', '#']).next().unwrap_or("/");
        let shown: String = asked.chars().take(200).collect();
        let more = if shown.len() < asked.len() { "…" } else { "" };
        let not_found = Error::RouteNotFound(format!("no route for {shown}{more}"));
        return ("unknown", error_reply(api_for(path), &not_found));
    };
    let fail_as = |api: Api, e: &Error| (first.path, error_reply(api, e));
    let fail = |e: &Error| fail_as(api_for(path), e);
    if req.method == "OPTIONS" {
        // A browser's preflight carries no credentials: it is answered before the key check.
        let methods: Vec<&str> = table
            .iter()
            .filter(|r| r.path == path)
            .flat_map(|r| r.methods.iter().copied())
            .collect();
        if let Some(headers) = app.cors.preflight(req.headers, &methods) {
            let reply = Reply {
                status: 204,
                content_type: TEXT,
                body: Vec::new(),
                retry_after: None,
                headers,
            };
            return (first.path, reply);
        }
    }
    if let Err(e) = authorize(app.api_key.as_ref(), first.path, req.headers) {
        return fail(&e);
    }
    let mut rows = table
        .iter()
        .filter(|r| r.path == path && r.methods.contains(&req.method))
        .peekable();
    if rows.peek().is_none() {
        let mut allowed: Vec<&str> = table
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.methods[0])
            .collect();
        allowed.dedup();
        return fail(&Error::MethodNotAllowed(format!(
            "{} is not allowed on {path}; use {}",
            req.method,
            allowed.join(" or ")
        )));
    }
    if req.body.len() > app.limits.max_body_bytes {
        return fail_as(api_for(path), &too_large(app.limits.max_body_bytes));
    }
    if req.method == "POST" {
        if let Err(e) = json_content_type(req.headers) {
            return fail(&e);
        }
    }
    let candidates: Vec<&Route<B>> = rows.collect();
    let row = pick(&candidates, req.body);
    let fail = |e: &Error| (row.path, error_reply(row.api, e));
    match (row.handler)(app, req.body) {
        Ok(body) => (
            row.path,
            Reply {
                status: 200,
                content_type: NOT_JSON
                    .iter()
                    .find(|(p, _)| *p == row.path && !row.methods.contains(&"POST"))
                    .map_or(JSON, |(_, t)| t),
                body: if req.method == "HEAD" {
                    Vec::new()
                } else {
                    body
                },
                retry_after: None,
                headers: Vec::new(),
            },
        ),
        Err(e) => fail(&e),
    }
}

/// The row that takes this body among rows sharing a path and method (see [`When`]).
fn pick<'r, B>(rows: &[&'r Route<B>], body: &[u8]) -> &'r Route<B> {
    if rows.len() > 1 {
        if let Some(fields) = crate::api::probe(body) {
            if let Some(row) = rows.iter().find(|r| match r.when {
                When::Any => true,
                When::Has(f) => fields.has(f),
            }) {
                return row;
            }
        }
    }
    rows.iter()
        .find(|r| r.when == When::Any)
        .unwrap_or(&rows[rows.len() - 1])
}

/// The table's columns other than the handler do not depend on the backend; this one lets them
/// be read without one.
#[derive(Debug)]
struct NoBackend;

impl Backend for NoBackend {
    fn forward(&self, _: &crate::Batch) -> Result<crate::Tensor> {
        Err(Error::Backend("no backend".into()))
    }
}

/// Checks the API key of a request whose key the adapter reads per request (the Wasm
/// component: never from its pre-initialised snapshot), as [`route`] checks the app's: an
/// error reply to send, or `None` to go on.
pub fn check_key(key: Option<&ApiKey>, req: &Request) -> Option<Reply> {
    let path = normalize(req.path);
    let table = table::<NoBackend>();
    let known = table
        .iter()
        .find(|r| r.path == path)
        .map_or(path, |r| r.path);
    authorize(key, known, req.headers)
        .err()
        .map(|e| error_reply(api_for(path), &e))
}

/// The API family of a path (its errors' shape before the body is read): the table's default
/// row for it (the one that takes any body), else OpenAI's under `/v1/`.
pub fn api_for(path: &str) -> Api {
    let path = normalize(path);
    let table = table::<NoBackend>();
    let rows = || table.iter().filter(|r| r.path == path);
    rows()
        .find(|r| r.when == When::Any)
        .or_else(|| rows().next())
        .map_or(
            if path.starts_with("/v1/") {
                Api::OpenAi
            } else {
                Api::Ollama
            },
            |r| r.api,
        )
}

/// Every POST route takes JSON: a body declared as anything else (a form, plain text) is
/// refused with a 415 before it is read. A request without `Content-Type` is taken as JSON.
fn json_content_type(headers: &[(&str, &str)]) -> Result<()> {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    else {
        return Ok(());
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(Error::UnsupportedMediaType(format!(
        "Content-Type {value:?} is not accepted: send the body as application/json"
    )))
}

/// The path without query string or trailing slash.
fn normalize(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

/// The 413 error for a body over `max` bytes (adapters that stop reading early use it too).
pub fn too_large(max: usize) -> Error {
    Error::PayloadTooLarge(format!(
        "request body is larger than the limit of {max} bytes"
    ))
}

/// The 408 for a body that did not arrive within `timeout` (`BODY_TIMEOUT_MS`; adapters that
/// read bodies themselves use it).
pub fn body_timeout(timeout: std::time::Duration) -> Error {
    Error::BodyTimeout(format!(
        "the request body did not arrive within {} ms (BODY_TIMEOUT_MS)",
        timeout.as_millis()
    ))
}

/// An error as a reply in the API's own shape, with the status from the one table.
pub fn error_reply(api: Api, e: &Error) -> Reply {
    let message = e.to_string();
    let body = match api {
        Api::Ollama => json!({ "error": message }),
        Api::OpenAi => json!({ "error": {
            "message": message, "type": e.openai_type(), "param": null, "code": e.openai_code(),
        }}),
        Api::Tei => {
            let (status, kind) = tei::error_kind(e);
            let body = tei::ErrorResponse {
                error: message,
                error_type: kind,
            };
            return Reply {
                status,
                content_type: "application/json",
                body: serde_json::to_vec(&body).unwrap_or_default(),
                retry_after: e.retry_after(),
                headers: Vec::new(),
            };
        }
    };
    Reply {
        status: e.status(),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        retry_after: e.retry_after(),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn app_with_key(key: Option<&str>) -> App<NoBackend> {
        let mut app = App::new(Registry::single(None, None));
        app.api_key = key.map(ApiKey::new);
        app
    }

    fn get(app: &App<NoBackend>, path: &str, auth: Option<&str>) -> u16 {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        route(
            app,
            &Request {
                method: "GET",
                path,
                headers: &headers,
                body: b"",
            },
        )
        .status
    }

    #[test]
    fn api_key_guards_every_route_but_health() {
        let open = app_with_key(None);
        assert_eq!(get(&open, "/api/tags", None), 200);
        let app = app_with_key(Some("s3cret"));
        assert_eq!(get(&app, "/health", None), 200);
        assert_eq!(get(&app, "/api/tags", None), 401);
        assert_eq!(get(&app, "/metrics", None), 401);
        assert_eq!(get(&app, "/api/tags", Some("Bearer wrong")), 401);
        assert_eq!(get(&app, "/api/tags", Some("Bearer s3cret")), 200);
        assert_eq!(get(&app, "/v1/models", Some("bearer  s3cret ")), 200);
        assert_eq!(get(&app, "/api/tags", Some("Basic s3cret")), 401);
        assert!(!format!("{app:?}").contains("s3cret"));
    }

    #[test]
    fn metrics_count_requests_by_route_and_status() {
        let app = app_with_key(None);
        get(&app, "/api/tags", None);
        get(&app, "/nope", None);
        let text = String::from_utf8(
            route(
                &app,
                &Request {
                    method: "GET",
                    path: "/metrics",
                    headers: &[],
                    body: b"",
                },
            )
            .body,
        )
        .unwrap();
        assert!(text.contains("embedfn_requests_total{route=\"/api/tags\",status=\"200\"} 1"));
        assert!(text.contains("embedfn_requests_total{route=\"unknown\",status=\"404\"} 1"));
    }

    #[test]
    fn health_is_503_once_a_worker_has_stopped() {
        let app = app_with_key(None);
        assert_eq!(get(&app, "/health", None), 200);
        app.metrics.broken("the batching thread stopped");
        assert_eq!(get(&app, "/health", None), 503);
    }

    #[test]
    fn json_routes_refuse_other_content_types() {
        let app = app_with_key(None);
        let post = |content_type: Option<&str>| {
            let headers: Vec<(&str, &str)> = content_type
                .map(|c| ("Content-Type", c))
                .into_iter()
                .collect();
            route(
                &app,
                &Request {
                    method: "POST",
                    path: "/api/embed",
                    headers: &headers,
                    body: b"{}",
                },
            )
            .status
        };
        assert_eq!(post(Some("application/x-www-form-urlencoded")), 415);
        assert_eq!(post(Some("text/plain")), 415);
        // Accepted (the request then fails for want of a model, not of its type).
        assert_ne!(post(Some("application/json; charset=utf-8")), 415);
        assert_ne!(post(Some("application/vnd.api+json")), 415);
        assert_ne!(post(None), 415);
    }

    #[test]
    fn a_per_request_key_guards_like_the_apps() {
        let key = ApiKey::new("k");
        let req = |path, auth: Option<&'static str>| {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            check_key(
                Some(&key),
                &Request {
                    method: "GET",
                    path,
                    headers: &headers,
                    body: b"",
                },
            )
            .map(|r| r.status)
        };
        assert_eq!(req("/api/tags", None), Some(401));
        assert_eq!(req("/health/", None), None);
        assert_eq!(req("/api/tags", Some("Bearer k")), None);
        assert_eq!(
            check_key(
                None,
                &Request {
                    method: "GET",
                    path: "/x",
                    headers: &[],
                    body: b""
                }
            ),
            None
        );
    }

    #[test]
    fn api_family_comes_from_the_table() {
        assert_eq!(api_for("/tokenize"), Api::OpenAi);
        assert_eq!(api_for("/rerank/"), Api::OpenAi);
        assert_eq!(api_for("/api/embed?x=1"), Api::Ollama);
        assert_eq!(api_for("/v1/unknown"), Api::OpenAi);
        assert_eq!(api_for("/unknown"), Api::Ollama);
    }
}
