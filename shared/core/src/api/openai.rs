//! OpenAI's `/v1/embeddings` with the Jina API's additions (`task`, `dimensions`,
//! `late_chunking`, `embedding_type`, `truncate`, `normalized`), and `/v1/models`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{check_count, inputs, parse_body, reply};
use crate::app::App;
use crate::backend::Backend;
use crate::embed::EmbedParams;
use crate::error::Result;
use crate::output::{Encoded, OutputEncoding};

/// `POST /v1/embeddings` (OpenAI, with the Jina API's additions: `task`, `late_chunking`,
/// `normalized`, and a per-request `max_length`). Null fields are as good as absent (Spin's
/// `open_ai` client sends `encoding_format`, `dimensions` and `user` as null).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"input": ["Hello", "world"], "encoding_format": "float"}))]
pub struct EmbeddingsRequest {
    /// A string, strings, token ids, or arrays of token ids.
    pub input: Option<Value>,
    /// A served model's name (default: the first embedder).
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    /// Jina: `float`, `base64`, `binary`, `ubinary`.
    pub embedding_type: Option<String>,
    /// Matryoshka truncation.
    pub dimensions: Option<usize>,
    /// Jina: the task adapter (or, for prompt models, the prompt's name).
    pub task: Option<String>,
    /// Cohere, Voyage, Nomic style: `query` or `document` (`search_query`, `search_document`,
    /// `passage`): the model's query or document task or prompt, whatever it is called.
    pub input_type: Option<String>,
    /// Jina: pool each input over its span of one joint sequence.
    pub late_chunking: Option<bool>,
    /// Jina: cut over-long inputs (default true).
    pub truncate: Option<bool>,
    /// Jina: L2-normalise (default true).
    pub normalized: Option<bool>,
    /// A per-request token limit (special tokens included; at most the model's).
    pub max_length: Option<usize>,
    /// OpenAI: ignored.
    pub user: Option<String>,
}

/// A vector as numbers (packed bits for `binary` / `ubinary` are numbers too: a separate
/// integer-array variant would make `oneOf` ambiguous), or a base64 string: the schema of
/// `output::Encoded`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EncodedDoc {
    /// Numbers.
    Float(Vec<f32>),
    /// Little-endian f32 bytes, base64.
    Base64(String),
}

/// One vector.
#[derive(Serialize, ToSchema)]
pub struct Embedding {
    /// `embedding`
    object: &'static str,
    /// Position in `input`.
    index: usize,
    /// The vector.
    #[schema(value_type = EncodedDoc)]
    embedding: Encoded,
}

/// Token counts.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    /// Tokens run.
    prompt_tokens: usize,
    /// Tokens run.
    total_tokens: usize,
}

/// The vectors.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// `list`
    object: &'static str,
    /// One per input.
    data: Vec<Embedding>,
    /// The model name as asked.
    model: String,
    /// Token counts.
    usage: Usage,
}

/// `POST /v1/embeddings`
pub fn embeddings<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: EmbeddingsRequest = parse_body(body)?;
    let (served, task) =
        app.models
            .embedder_for(req.model.as_deref(), req.task, req.input_type.as_deref())?;
    let inputs = inputs(req.input)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let encoding = req
        .embedding_type
        .or(req.encoding_format)
        .map_or(Ok(OutputEncoding::Float), |e| OutputEncoding::parse(&e))?;
    let params = EmbedParams {
        task,
        dimensions: req.dimensions,
        truncate: req.truncate.unwrap_or(true),
        normalize: req.normalized.unwrap_or(true),
        late_chunking: req.late_chunking.unwrap_or(false),
        max_length: req.max_length,
        ..EmbedParams::default()
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

/// `POST /tokenize` in embedfn's own shape (`input`).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"input": ["Hello"]}))]
pub struct TokenizeRequest {
    /// A string, strings, or token ids.
    pub input: Option<Value>,
    /// A served model's name.
    pub model: Option<String>,
    /// The task adapter (its instruction is prepended).
    pub task: Option<String>,
    /// Cut over-long inputs (default true).
    pub truncate: Option<bool>,
}

/// The token ids each input runs as.
#[derive(Serialize, ToSchema)]
pub struct TokenizeResponse {
    /// The model name as asked.
    pub model: String,
    /// One id sequence per input.
    pub tokens: Vec<Vec<i64>>,
}

/// One listed model.
#[derive(Serialize, ToSchema)]
pub struct ModelEntry {
    /// Its name.
    pub id: String,
    /// `model`
    pub object: String,
    /// 0
    pub created: u64,
    /// `embedfn`
    pub owned_by: String,
}

/// `GET /v1/models`
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// `list`
    pub object: String,
    /// Every served model.
    pub data: Vec<ModelEntry>,
}

/// `POST /tokenize`: the token ids the embedding model runs for each input (task instruction
/// and special tokens included), for counting and debugging.
pub fn tokenize<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: TokenizeRequest = parse_body(body)?;
    let (served, task) = app
        .models
        .embedder_for(req.model.as_deref(), req.task, None)?;
    let inputs = inputs(req.input)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let params = EmbedParams {
        task,
        truncate: req.truncate.unwrap_or(true),
        ..EmbedParams::default()
    };
    let tokens: Vec<Vec<i64>> = served
        .model
        .tokenize(&inputs, &params)?
        .into_iter()
        .map(|t| t.ids)
        .collect();
    reply(&TokenizeResponse {
        model: req.model.unwrap_or_else(|| served.info.name.clone()),
        tokens,
    })
}

/// `GET /v1/models`
pub fn models<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let data = app
        .models
        .list()
        .into_iter()
        .map(|(info, _, _)| ModelEntry {
            id: info.name.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "embedfn".into(),
        })
        .collect();
    reply(&ModelList {
        object: "list".into(),
        data,
    })
}
