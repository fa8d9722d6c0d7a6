//! OpenAI's `/v1/embeddings` with the Jina API's additions (`task`, `dimensions`,
//! `late_chunking`, `embedding_type`, `truncate`, `normalized`), and `/v1/models`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_count, inputs, parse_body, reply};
use crate::backend::Backend;
use crate::embed::EmbedParams;
use crate::error::Result;
use crate::output::{Encoded, OutputEncoding};
use crate::router::App;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Option<Value>,
    model: Option<String>,
    encoding_format: Option<String>,
    embedding_type: Option<String>,
    dimensions: Option<usize>,
    task: Option<String>,
    late_chunking: Option<bool>,
    truncate: Option<bool>,
    normalized: Option<bool>,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Encoded,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: Usage,
}

/// `POST /v1/embeddings`
pub fn embeddings<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: EmbeddingsRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let inputs = inputs(req.input)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let encoding = req
        .embedding_type
        .or(req.encoding_format)
        .map_or(Ok(OutputEncoding::Float), |e| OutputEncoding::parse(&e))?;
    let params = EmbedParams {
        task: req.task.or(suffix_task.map(str::to_string)),
        dimensions: req.dimensions,
        truncate: req.truncate.unwrap_or(true),
        normalize: req.normalized.unwrap_or(true),
        late_chunking: req.late_chunking.unwrap_or(false),
    };
    let out = served.model.embed(&inputs, &params)?;
    reply(&EmbeddingsResponse {
        object: "list",
        data: out
            .vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| Embedding {
                object: "embedding",
                index,
                embedding: encoding.encode(v),
            })
            .collect(),
        model: req.model.unwrap_or_else(|| served.info.name.clone()),
        usage: Usage {
            prompt_tokens: out.prompt_tokens,
            total_tokens: out.prompt_tokens,
        },
    })
}

#[derive(Deserialize)]
struct TokenizeRequest {
    input: Option<Value>,
    model: Option<String>,
    task: Option<String>,
    truncate: Option<bool>,
}

/// `POST /tokenize`: the token ids the embedding model runs for each input (task instruction
/// and special tokens included), for counting and debugging.
pub fn tokenize<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: TokenizeRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let inputs = inputs(req.input)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let params = EmbedParams {
        task: req.task.or(suffix_task.map(str::to_string)),
        truncate: req.truncate.unwrap_or(true),
        ..EmbedParams::default()
    };
    let tokens: Vec<Vec<i64>> = served
        .model
        .tokenize(&inputs, &params)?
        .into_iter()
        .map(|t| t.ids)
        .collect();
    reply(&json!({
        "model": req.model.unwrap_or_else(|| served.info.name.clone()),
        "tokens": tokens,
    }))
}

/// `GET /v1/models`
pub fn models<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let data: Vec<Value> = app
        .models
        .list()
        .into_iter()
        .map(|(info, _, _)| json!({"id": info.name, "object": "model", "created": 0, "owned_by": "embedfn"}))
        .collect();
    reply(&json!({ "object": "list", "data": data }))
}
