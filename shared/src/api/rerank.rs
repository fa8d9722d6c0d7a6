//! The Jina / Cohere rerank API: `POST /v1/rerank` (and Cohere's `/v2/rerank`).

use serde::{Deserialize, Serialize};

use super::{check_count, parse_body, reply};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::router::App;

/// A document as a plain string or as Cohere/Jina's `{"text": …}` object.
#[derive(Deserialize, Serialize, Clone)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }
}

#[derive(Deserialize)]
struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Vec<Document>>,
    top_n: Option<usize>,
    return_documents: Option<bool>,
}

#[derive(Serialize)]
struct DocumentText<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Result_<'a> {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentText<'a>>,
}

#[derive(Serialize)]
struct Usage {
    total_tokens: usize,
}

#[derive(Serialize)]
struct RerankResponse<'a> {
    model: String,
    usage: Usage,
    results: Vec<Result_<'a>>,
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
        usage: Usage {
            total_tokens: ranking.total_tokens,
        },
        results: ranking
            .results
            .iter()
            .map(|r| Result_ {
                index: r.index,
                relevance_score: r.score,
                document: with_docs.then(|| DocumentText {
                    text: texts[r.index],
                }),
            })
            .collect(),
    })
}
