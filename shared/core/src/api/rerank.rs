//! The Jina / Cohere rerank API: `POST /v1/rerank` (and Cohere's `/v2/rerank`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_count, parse_body, reply};
use crate::app::App;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// A document as a plain string or as Cohere/Jina's `{"text": …}` object.
#[derive(Deserialize, Serialize, Clone, ToSchema)]
#[serde(untagged)]
pub enum Document {
    /// The text.
    Text(String),
    /// `{"text": …}`
    Object {
        /// The text.
        text: String,
    },
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }
}

/// `POST /v1/rerank`, `/v2/rerank`, `/rerank` (Jina / Cohere).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}))]
pub struct RerankRequest {
    /// A served reranker's name (default: the first).
    pub model: Option<String>,
    /// The query.
    pub query: Option<String>,
    /// Strings or `{"text": …}` objects.
    pub documents: Option<Vec<Document>>,
    /// Keep the best n.
    pub top_n: Option<usize>,
    /// Include each document (default true).
    pub return_documents: Option<bool>,
}

/// A returned document.
#[derive(Serialize, ToSchema)]
pub struct DocumentText<'a> {
    /// Its text.
    text: &'a str,
}

/// One ranked document.
#[derive(Serialize, ToSchema)]
pub struct RerankResult<'a> {
    /// Position in `documents`.
    index: usize,
    /// sigmoid(logit)
    relevance_score: f32,
    /// The document, unless `return_documents` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentText<'a>>,
}

/// Token counts.
#[derive(Serialize, ToSchema)]
pub struct RerankUsage {
    /// Tokens run, all windows together.
    total_tokens: usize,
}

/// The ranking, best first.
#[derive(Serialize, ToSchema)]
pub struct RerankResponse<'a> {
    /// The model name as asked.
    model: String,
    /// Token counts.
    usage: RerankUsage,
    /// Ranked documents.
    results: Vec<RerankResult<'a>>,
}

/// The checks both rerank routes share: a query, a non-empty documents list within the limit,
/// and a `top_n` of at least 1 when given. Returns the query and `top_n`.
pub fn check_request(
    max_documents: usize,
    query: Option<String>,
    documents: Option<usize>,
    top_n: Option<usize>,
) -> Result<(String, Option<usize>)> {
    let query = query.ok_or_else(|| Error::bad_request("'query' is required"))?;
    match documents {
        None | Some(0) => {
            return Err(Error::bad_request(
                "'documents' must be a non-empty array of strings or {\"text\": …} objects",
            ))
        }
        Some(n) => check_count(n, max_documents, "documents")?,
    }
    if top_n == Some(0) {
        return Err(Error::bad_request("'top_n' must be at least 1"));
    }
    Ok((query, top_n))
}

/// `POST /v1/rerank`
pub fn rerank<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: RerankRequest = parse_body(body)?;
    let served = app.models.reranker(req.model.as_deref())?;
    let (query, top_n) = check_request(
        app.limits.max_documents,
        req.query,
        req.documents.as_ref().map(Vec::len),
        req.top_n,
    )?;
    let documents = req.documents.unwrap_or_default();
    let texts: Vec<&str> = documents.iter().map(Document::text).collect();
    let ranking = served.model.rerank(&query, &texts, top_n)?;
    let with_docs = req.return_documents.unwrap_or(true);
    reply(&RerankResponse {
        model: req.model.unwrap_or_else(|| served.info.name.clone()),
        usage: RerankUsage {
            total_tokens: ranking.total_tokens,
        },
        results: ranking
            .results
            .iter()
            .map(|r| RerankResult {
                index: r.index,
                relevance_score: r.score,
                document: with_docs.then(|| DocumentText {
                    text: texts[r.index],
                }),
            })
            .collect(),
    })
}
