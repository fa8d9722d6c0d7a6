//! The one route table. Every adapter (native server, Lambda, Wasm component) turns its request
//! into a [`Request`], calls [`route`], and writes back the [`Reply`]: routing, validation,
//! status codes and error bodies live here, once.

use std::sync::Arc;

use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::{ollama, openai, rerank, spin, tei};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Request limits (all configurable by the adapters' environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Inputs per embedding request.
    pub max_inputs: usize,
    /// Documents per rerank request.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_inputs: 2048,
            max_documents: 1000,
        }
    }
}

/// Everything a handler may use: the models, the limits, the metrics.
#[derive(Debug)]
pub struct App<B> {
    /// The served models.
    pub models: Registry<B>,
    /// Request limits.
    pub limits: Limits,
    /// Reported by `/api/version`.
    pub version: String,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// Served at `/metrics`; shared with whatever runs forward passes.
    pub metrics: Arc<Metrics>,
}

impl<B> App<B> {
    /// An app with default limits, no API key and this crate's version.
    pub fn new(models: Registry<B>) -> Self {
        Self {
            models,
            limits: Limits::default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_key: None,
            metrics: Arc::default(),
        }
    }
}

/// The API key clients must send. Compared in constant time; `Debug` never shows it, so it
/// cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps the configured key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Whether `token` is the key (time independent of where they differ).
    pub fn matches(&self, token: &str) -> bool {
        token.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

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
}

/// Which API family a route belongs to: decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `{"error": "message"}` (Ollama, and Spin's remote LLM contract)
    Ollama,
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
    /// Hugging Face TEI: `{"error": "message", "error_type": "Validation"}`, with TEI's statuses
    Tei,
}

type Handler<B> = fn(&App<B>, &[u8]) -> Result<Vec<u8>>;

/// Which bodies a row takes when several rows share a path and method: the first row whose
/// condition holds answers (the last row of a path should be [`When::Any`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Any body.
    Any,
    /// The body is a JSON object with this top-level field (`"texts"`), or with this field
    /// inside an object field (`"inputs.source_sentence"`).
    Has(&'static str),
}

/// One row of the table.
pub(crate) struct Route<B> {
    pub(crate) methods: &'static [&'static str],
    pub(crate) path: &'static str,
    pub(crate) api: Api,
    pub(crate) handler: Handler<B>,
    pub(crate) when: When,
    /// What `/openapi.json` says about the row.
    pub(crate) doc: crate::openapi::Doc,
}

impl<B> Route<B> {
    fn when(mut self, field: &'static str) -> Self {
        self.when = When::Has(field);
        self
    }

    fn doc(mut self, doc: crate::openapi::Doc) -> Self {
        self.doc = doc;
        self
    }
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The paths whose body is not JSON, with their content type.
const NOT_JSON: [(&str, &str); 2] = [("/", TEXT), ("/metrics", PROMETHEUS)];

/// The one path that needs no API key (load balancers and orchestrators probe it).
const OPEN: &str = "/health";

pub(crate) fn table<B: Backend>() -> Vec<Route<B>> {
    use crate::openapi::{doc, get, text, Doc};
    use Api::{Ollama, OpenAi, Tei};
    const GET: &[&str] = &["GET", "HEAD"];
    const POST: &[&str] = &["POST"];
    let row = |methods, path, api, handler: Handler<B>| Route {
        methods,
        path,
        api,
        handler,
        when: When::Any,
        doc: Doc::default(),
    };
    vec![
        row(GET, "/", Ollama, |_, _| Ok(b"Ollama is running".to_vec())).doc(text()),
        // TEI's `POST /` for Hugging Face-style clients: similarity and rerank by body, else
        // what the served model does (embed; rerank on a reranker-only server).
        row(POST, "/", Tei, tei::similarity)
            .when("inputs.source_sentence")
            .doc(doc::<tei::SimilarityRequest, tei::SimilarityResponse>()),
        row(POST, "/", Tei, tei::rerank)
            .when("texts")
            .doc(doc::<tei::RerankRequest, tei::RerankResponse>()),
        row(POST, "/", Tei, tei::root).doc(doc::<tei::EmbedRequest, tei::EmbedResponse>()),
        row(GET, "/health", Ollama, health).doc(get::<Health>()),
        row(GET, "/metrics", Ollama, |app, _| {
            Ok(app.metrics.render().into_bytes())
        })
        .doc(text()),
        row(GET, "/openapi.json", Ollama, crate::openapi::document).doc(Doc::any_json()),
        row(POST, "/api/embed", Ollama, ollama::embed)
            .doc(doc::<ollama::EmbedRequest, ollama::EmbedResponse>()),
        row(POST, "/api/embeddings", Ollama, ollama::embeddings)
            .doc(doc::<ollama::LegacyRequest, ollama::LegacyResponse>()),
        row(POST, "/api/rerank", Ollama, ollama::rerank)
            .doc(doc::<ollama::RerankRequest, ollama::RerankResponse>()),
        row(GET, "/api/tags", Ollama, ollama::tags).doc(get::<ollama::Tags>()),
        row(POST, "/api/show", Ollama, ollama::show)
            .doc(doc::<ollama::ShowRequest, ollama::ShowResponse>()),
        row(GET, "/api/ps", Ollama, ollama::ps).doc(get::<ollama::Running>()),
        row(GET, "/api/version", Ollama, ollama::version).doc(get::<ollama::Version>()),
        row(POST, "/v1/embeddings", OpenAi, openai::embeddings)
            .doc(doc::<openai::EmbeddingsRequest, openai::EmbeddingsResponse>()),
        row(POST, "/embeddings", OpenAi, openai::embeddings)
            .doc(doc::<openai::EmbeddingsRequest, openai::EmbeddingsResponse>()),
        row(GET, "/v1/models", OpenAi, openai::models).doc(get::<openai::ModelList>()),
        row(POST, "/v1/rerank", OpenAi, rerank::rerank)
            .doc(doc::<rerank::RerankRequest, rerank::RerankResponse<'static>>()),
        // `/rerank`: TEI's `texts`, else Jina / Cohere `documents`.
        row(POST, "/rerank", Tei, tei::rerank)
            .when("texts")
            .doc(doc::<tei::RerankRequest, tei::RerankResponse>()),
        row(POST, "/rerank", OpenAi, rerank::rerank)
            .doc(doc::<rerank::RerankRequest, rerank::RerankResponse<'static>>()),
        row(POST, "/v2/rerank", OpenAi, rerank::rerank)
            .doc(doc::<rerank::RerankRequest, rerank::RerankResponse<'static>>()),
        // `/tokenize`: TEI's `inputs`, else embedfn's own `input`.
        row(POST, "/tokenize", Tei, tei::tokenize)
            .when("inputs")
            .doc(doc::<tei::TokenizeRequest, tei::TokenizeResponse>()),
        row(POST, "/tokenize", OpenAi, openai::tokenize)
            .doc(doc::<openai::TokenizeRequest, openai::TokenizeResponse>()),
        // `/embed`: Spin's remote LLM contract sends `input`; everything else is TEI's.
        row(POST, "/embed", Ollama, spin::embed)
            .when("input")
            .doc(doc::<spin::SpinEmbedRequest, spin::SpinEmbedResponse>()),
        row(POST, "/embed", Tei, tei::embed).doc(doc::<tei::EmbedRequest, tei::EmbedResponse>()),
        row(POST, "/embed_all", Tei, tei::embed_all)
            .doc(doc::<tei::EmbedAllRequest, tei::EmbedAllResponse>()),
        row(POST, "/similarity", Tei, tei::similarity)
            .doc(doc::<tei::SimilarityRequest, tei::SimilarityResponse>()),
        row(POST, "/decode", Tei, tei::decode)
            .doc(doc::<tei::DecodeRequest, tei::DecodeResponse>()),
        row(GET, "/info", Tei, tei::info).doc(get::<tei::Info>()),
    ]
}

/// Answers one request. Never panics on user input; every failure is a JSON error reply.
pub fn route<B: Backend>(app: &App<B>, req: &Request) -> Reply {
    let started = std::time::Instant::now();
    let (label, reply) = dispatch(app, req);
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
    if let Err(e) = authorize(app, first.path, req.headers) {
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

/// Checks `Authorization: Bearer <key>` when the app has a key, in constant time.
fn authorize<B>(app: &App<B>, path: &str, headers: &[(&str, &str)]) -> Result<()> {
    let Some(key) = &app.api_key else {
        return Ok(());
    };
    if path == OPEN {
        return Ok(());
    }
    let given = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if key.matches(token) => Ok(()),
        Some(_) => Err(Error::Unauthorized("invalid API key".into())),
        None => Err(Error::Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'".into(),
        )),
    }
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
            };
        }
    };
    Reply {
        status: e.status(),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        retry_after: e.retry_after(),
    }
}

/// `GET /health`
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
    /// The default embedding model.
    pub embedding_model: Option<String>,
    /// The default reranker.
    pub reranker_model: Option<String>,
    /// Every embedding model.
    pub embedding_models: Vec<String>,
    /// Every reranker.
    pub reranker_models: Vec<String>,
}

fn health<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let embedding_models: Vec<String> = app
        .models
        .embedders
        .iter()
        .map(|s| s.info.name.clone())
        .collect();
    let reranker_models: Vec<String> = app
        .models
        .rerankers
        .iter()
        .map(|s| s.info.name.clone())
        .collect();
    crate::api::reply(&Health {
        status: "ok".into(),
        embedding_model: embedding_models.first().cloned(),
        reranker_model: reranker_models.first().cloned(),
        embedding_models,
        reranker_models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn api_family_comes_from_the_table() {
        assert_eq!(api_for("/tokenize"), Api::OpenAi);
        assert_eq!(api_for("/rerank/"), Api::OpenAi);
        assert_eq!(api_for("/api/embed?x=1"), Api::Ollama);
        assert_eq!(api_for("/v1/unknown"), Api::OpenAi);
        assert_eq!(api_for("/unknown"), Api::Ollama);
    }
}
