//! The one route table. Every adapter (native server, Lambda, Wasm component) turns its request
//! into a [`Request`], calls [`route`], and writes back the [`Reply`]: routing, validation,
//! status codes and error bodies live here, once.

use serde_json::json;

use crate::api::{ollama, openai, rerank};
use crate::backend::Backend;
use crate::error::{Error, Result};
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

/// Everything a handler may use: the models and the limits.
#[derive(Debug)]
pub struct App<B> {
    /// The served models.
    pub models: Registry<B>,
    /// Request limits.
    pub limits: Limits,
    /// Reported by `/api/version`.
    pub version: String,
}

impl<B> App<B> {
    /// An app with default limits and this crate's version.
    pub fn new(models: Registry<B>) -> Self {
        Self {
            models,
            limits: Limits::default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
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
}

/// Which API family a route belongs to: decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `{"error": "message"}`
    Ollama,
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
}

type Handler<B> = fn(&App<B>, &[u8]) -> Result<Vec<u8>>;

/// One row of the table.
struct Route<B> {
    methods: &'static [&'static str],
    path: &'static str,
    api: Api,
    handler: Handler<B>,
}

fn table<B: Backend>() -> [Route<B>; 16] {
    use Api::{Ollama, OpenAi};
    const GET: &[&str] = &["GET", "HEAD"];
    const POST: &[&str] = &["POST"];
    let row = |methods, path, api, handler: Handler<B>| Route {
        methods,
        path,
        api,
        handler,
    };
    [
        row(GET, "/", Ollama, |_, _| Ok(b"Ollama is running".to_vec())),
        row(GET, "/health", Ollama, health),
        row(POST, "/api/embed", Ollama, ollama::embed),
        row(POST, "/api/embeddings", Ollama, ollama::embeddings),
        row(POST, "/api/rerank", Ollama, ollama::rerank),
        row(GET, "/api/tags", Ollama, ollama::tags),
        row(POST, "/api/show", Ollama, ollama::show),
        row(GET, "/api/ps", Ollama, ollama::ps),
        row(GET, "/api/version", Ollama, ollama::version),
        row(POST, "/v1/embeddings", OpenAi, openai::embeddings),
        row(POST, "/embeddings", OpenAi, openai::embeddings),
        row(GET, "/v1/models", OpenAi, openai::models),
        row(POST, "/v1/rerank", OpenAi, rerank::rerank),
        row(POST, "/rerank", OpenAi, rerank::rerank),
        row(POST, "/v2/rerank", OpenAi, rerank::rerank),
        row(POST, "/tokenize", OpenAi, openai::tokenize),
    ]
}

/// Answers one request. Never panics on user input; every failure is a JSON error reply.
pub fn route<B: Backend>(app: &App<B>, req: &Request) -> Reply {
    let path = normalize(req.path);
    let table = table::<B>();
    let Some(row) = table.iter().find(|r| r.path == path) else {
        let not_found = Error::RouteNotFound(format!("no route for {path}"));
        return error_reply(api_for(path), &not_found);
    };
    if !row.methods.contains(&req.method) {
        return error_reply(
            row.api,
            &Error::MethodNotAllowed(format!(
                "{} is not allowed on {path}; use {}",
                req.method, row.methods[0]
            )),
        );
    }
    if req.body.len() > app.limits.max_body_bytes {
        return error_reply(row.api, &too_large(app.limits.max_body_bytes));
    }
    match (row.handler)(app, req.body) {
        Ok(body) => Reply {
            status: 200,
            content_type: if path == "/" {
                "text/plain; charset=utf-8"
            } else {
                "application/json"
            },
            body: if req.method == "HEAD" {
                Vec::new()
            } else {
                body
            },
        },
        Err(e) => error_reply(row.api, &e),
    }
}

/// The API family of a path (its errors' shape): the table's, else OpenAI's under `/v1/`.
pub fn api_for(path: &str) -> Api {
    /// The table's API column does not depend on the backend; this one only lets it be read.
    struct NoBackend;
    impl Backend for NoBackend {
        fn forward(&self, _: &crate::Batch) -> Result<crate::Tensor> {
            Err(Error::Backend("no backend".into()))
        }
    }
    let path = normalize(path);
    table::<NoBackend>().iter().find(|r| r.path == path).map_or(
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
    };
    Reply {
        status: e.status(),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    }
}

/// `GET /health`
fn health<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    crate::api::reply(&json!({
        "status": "ok",
        "embedding_model": app.models.embedder.as_ref().map(|s| &s.info.name),
        "reranker_model": app.models.reranker.as_ref().map(|s| &s.info.name),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_family_comes_from_the_table() {
        assert_eq!(api_for("/tokenize"), Api::OpenAi);
        assert_eq!(api_for("/rerank/"), Api::OpenAi);
        assert_eq!(api_for("/api/embed?x=1"), Api::Ollama);
        assert_eq!(api_for("/v1/unknown"), Api::OpenAi);
        assert_eq!(api_for("/unknown"), Api::Ollama);
    }
}
