//! TEI's request and response schemas (`router/src/http/types.rs` in TEI), with embedfn's one
//! addition: an optional `model` on requests.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::tokenize::Side;

/// One input: a text, or the model's token ids.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InputItem {
    /// A text.
    Text(String),
    /// Token ids.
    Ids(Vec<u32>),
}

/// `inputs`: one input or a batch.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Inputs {
    /// One input.
    One(InputItem),
    /// A batch.
    Many(Vec<InputItem>),
}

/// Which end of an over-long input is cut.
#[derive(Deserialize, ToSchema, Clone, Copy, Default)]
pub enum TruncationDirection {
    /// Keep the end.
    #[serde(alias = "left")]
    Left,
    /// Keep the start.
    #[serde(alias = "right")]
    #[default]
    Right,
}

impl From<TruncationDirection> for Side {
    fn from(d: TruncationDirection) -> Self {
        match d {
            TruncationDirection::Left => Side::Left,
            TruncationDirection::Right => Side::Right,
        }
    }
}

/// `POST /embed` (and `POST /` on an embedding server).
#[derive(Deserialize, ToSchema)]
#[schema(as = TeiEmbedRequest, example = json!({"inputs": ["What is Deep Learning?", "Hello"], "truncate": true, "truncation_direction": "Right", "normalize": true}))]
pub struct EmbedRequest {
    /// Text(s) or token ids to embed.
    pub inputs: Inputs,
    /// Cut over-long inputs (default true); false: a 422.
    pub truncate: Option<bool>,
    /// Which end to cut (default `Right`).
    pub truncation_direction: Option<TruncationDirection>,
    /// A prompt (task) name of the model, whose instruction is prepended.
    pub prompt_name: Option<String>,
    /// L2-normalise (default true).
    pub normalize: Option<bool>,
    /// Matryoshka truncation of the vectors.
    pub dimensions: Option<usize>,
    /// embedfn's addition: which served model (default: the first embedder).
    pub model: Option<String>,
}

/// One vector per input.
#[derive(Serialize, ToSchema)]
#[schema(as = TeiEmbedResponse)]
pub struct EmbedResponse(pub Vec<Vec<f32>>);

/// `POST /embed_all`: token embeddings.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"inputs": "What is Deep Learning?"}))]
pub struct EmbedAllRequest {
    /// Text(s) or token ids.
    pub inputs: Inputs,
    /// Cut over-long inputs (default true).
    pub truncate: Option<bool>,
    /// Which end to cut.
    pub truncation_direction: Option<TruncationDirection>,
    /// A prompt (task) name of the model.
    pub prompt_name: Option<String>,
    /// embedfn's addition: which served model.
    pub model: Option<String>,
}

/// Per input, one vector per token (special tokens included).
#[derive(Serialize, ToSchema)]
pub struct EmbedAllResponse(pub Vec<Vec<Vec<f32>>>);

/// `POST /rerank` (and `POST /` with `texts`).
#[derive(Deserialize, ToSchema)]
#[schema(as = TeiRerankRequest, example = json!({"query": "What is Deep Learning?", "texts": ["Deep Learning is ...", "Hello"], "return_text": true}))]
pub struct RerankRequest {
    /// The query.
    pub query: String,
    /// The texts to rank.
    pub texts: Vec<String>,
    /// Accepted for TEI compatibility: long texts are scored by windows, never cut.
    pub truncate: Option<bool>,
    /// Accepted for TEI compatibility.
    pub truncation_direction: Option<TruncationDirection>,
    /// Logits instead of sigmoid scores.
    #[serde(default)]
    pub raw_scores: bool,
    /// Include each text.
    #[serde(default)]
    pub return_text: bool,
    /// embedfn's addition: which served reranker.
    pub model: Option<String>,
}

/// One ranked text.
#[derive(Serialize, ToSchema)]
pub struct Rank {
    /// Position in `texts`.
    pub index: usize,
    /// The text, when `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Score (sigmoid of the logit, or the logit with `raw_scores`).
    pub score: f32,
}

/// Ranks, best first.
#[derive(Serialize, ToSchema)]
#[schema(as = TeiRerankResponse)]
pub struct RerankResponse(pub Vec<Rank>);

/// `inputs` of `POST /similarity`.
#[derive(Deserialize, ToSchema)]
pub struct SimilarityInput {
    /// The sentence the others are compared with.
    pub source_sentence: String,
    /// The sentences to compare.
    pub sentences: Vec<String>,
}

/// `parameters` of `POST /similarity`.
#[derive(Deserialize, ToSchema, Default)]
pub struct SimilarityParameters {
    /// Cut over-long inputs (default true).
    pub truncate: Option<bool>,
    /// Which end to cut.
    pub truncation_direction: Option<TruncationDirection>,
    /// A prompt (task) name of the model.
    pub prompt_name: Option<String>,
}

/// `POST /similarity` (and `POST /` with `inputs.source_sentence`).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"inputs": {"source_sentence": "What is Deep Learning?", "sentences": ["What is Machine Learning?"]}}))]
pub struct SimilarityRequest {
    /// Source and sentences.
    pub inputs: SimilarityInput,
    /// Options.
    pub parameters: Option<SimilarityParameters>,
    /// embedfn's addition: which served model.
    pub model: Option<String>,
}

/// Cosine similarity of each sentence with the source.
#[derive(Serialize, ToSchema)]
pub struct SimilarityResponse(pub Vec<f32>);

/// `inputs` of `POST /tokenize`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TokenizeInputs {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

/// `POST /tokenize` in TEI's shape (`inputs`).
#[derive(Deserialize, ToSchema)]
#[schema(as = TeiTokenizeRequest, example = json!({"inputs": "What is Deep Learning?", "add_special_tokens": true}))]
pub struct TokenizeRequest {
    /// Text(s).
    pub inputs: TokenizeInputs,
    /// Add the model's special tokens (default true).
    pub add_special_tokens: Option<bool>,
    /// A prompt (task) name whose instruction is prepended.
    pub prompt_name: Option<String>,
    /// embedfn's addition: which served model.
    pub model: Option<String>,
}

/// One token.
#[derive(Serialize, ToSchema)]
pub struct SimpleToken {
    /// Token id.
    pub id: u32,
    /// The text it covers.
    pub text: String,
    /// A special token.
    pub special: bool,
    /// Byte offset of its start (none for special tokens).
    pub start: Option<usize>,
    /// Byte offset of its end.
    pub stop: Option<usize>,
}

/// The tokens of each input.
#[derive(Serialize, ToSchema)]
#[schema(as = TeiTokenizeResponse)]
pub struct TokenizeResponse(pub Vec<Vec<SimpleToken>>);

/// `ids` of `POST /decode`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InputIds {
    /// One sequence.
    One(Vec<u32>),
    /// Several.
    Many(Vec<Vec<u32>>),
}

/// `POST /decode`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"ids": [[0, 10, 11, 2]], "skip_special_tokens": true}))]
pub struct DecodeRequest {
    /// Token ids.
    pub ids: InputIds,
    /// Leave special tokens out (default true).
    pub skip_special_tokens: Option<bool>,
    /// embedfn's addition: which served model.
    pub model: Option<String>,
}

/// One text per sequence.
#[derive(Serialize, ToSchema)]
pub struct DecodeResponse(pub Vec<String>);

/// TEI's error kinds.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorType {
    /// 503
    Unhealthy,
    /// 424
    Backend,
    /// 429
    Overloaded,
    /// 422 (413 for a body over the limit)
    Validation,
    /// 422
    Tokenizer,
    /// 400
    Empty,
}

/// TEI's error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: String,
    /// Its kind.
    pub error_type: ErrorType,
}

/// The pooling of an embedding model.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingModel {
    /// `mean` or `cls`.
    pub pooling: String,
}

/// A cross-encoder's labels.
#[derive(Serialize, ToSchema)]
pub struct ClassifierModel {
    /// Label by index.
    pub id2label: std::collections::BTreeMap<String, String>,
    /// Index by label.
    pub label2id: std::collections::BTreeMap<String, usize>,
}

/// What kind of model.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// An embedding model.
    Embedding(EmbeddingModel),
    /// A cross-encoder.
    Reranker(ClassifierModel),
}

/// One served model (embedfn's addition to `/info`: several may be served).
#[derive(Serialize, ToSchema)]
pub struct ServedModel {
    /// Its name.
    pub model_id: String,
    /// Its kind.
    pub model_type: ModelType,
    /// Its token limit.
    pub max_input_length: usize,
}

/// `GET /info`.
#[derive(Serialize, ToSchema)]
pub struct Info {
    /// The default model.
    pub model_id: String,
    /// Unknown.
    pub model_sha: Option<String>,
    /// Weight type of the default model's graph.
    pub model_dtype: String,
    /// Name served.
    pub served_model_name: String,
    /// Kind of the default model.
    pub model_type: ModelType,
    /// Concurrent requests accepted.
    pub max_concurrent_requests: usize,
    /// The default model's token limit.
    pub max_input_length: usize,
    /// Tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Not limited.
    pub max_batch_requests: Option<usize>,
    /// Inputs per request.
    pub max_client_batch_size: usize,
    /// `truncate` defaults to true.
    pub auto_truncate: bool,
    /// Tokenization runs on the request's thread.
    pub tokenization_workers: usize,
    /// embedfn's version.
    pub version: String,
    /// Unknown.
    pub sha: Option<String>,
    /// Unknown.
    pub docker_label: Option<String>,
    /// Every served model, the default first.
    pub models: Vec<ServedModel>,
}
