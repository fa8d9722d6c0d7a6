//! The one route table: every path, method and body condition embedfn answers, with its
//! handler, its API family (which decides the error body's shape) and what `/openapi.json`
//! says about it. A new API is new rows here and a schema module under `api/`.

use crate::api::{health, ollama, openai, rerank, spin, tei, Api};
use crate::app::App;
use crate::backend::Backend;
use crate::error::Result;
use crate::openapi::{Doc, Operation};

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
    pub(crate) doc: Doc,
}

impl<B> Route<B> {
    fn when(mut self, field: &'static str) -> Self {
        self.when = When::Has(field);
        self
    }

    fn doc(mut self, doc: Doc) -> Self {
        self.doc = doc;
        self
    }
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The paths whose body is not JSON, with their content type.
pub(crate) const NOT_JSON: [(&str, &str); 2] = [("/", TEXT), ("/metrics", PROMETHEUS)];

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
        row(GET, "/health", Ollama, health::health).doc(get::<health::Health>()),
        row(GET, "/metrics", Ollama, |app, _| {
            Ok(app.metrics.render().into_bytes())
        })
        .doc(text()),
        row(GET, "/openapi.json", Ollama, openapi_json).doc(Doc::any_json()),
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

/// `GET /openapi.json`: the document made from this table.
fn openapi_json<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    crate::api::reply(&openapi::<B>(&app.version))
}

/// The OpenAPI document of this table (for a backend type `B`: the handlers differ, the rows
/// do not).
pub fn openapi<B: Backend>(version: &str) -> utoipa::openapi::OpenApi {
    crate::openapi::document(
        table::<B>().into_iter().map(|r| Operation {
            method: r.methods[0],
            path: r.path,
            api: r.api,
            doc: r.doc,
        }),
        version,
    )
}
