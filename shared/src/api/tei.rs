//! Hugging Face text-embeddings-inference (TEI): `/embed`, `/embed_all`, `/rerank`,
//! `/similarity`, `/tokenize`, `/decode`, `/info`, and `POST /` for Hugging Face-style clients.
//!
//! Shapes, defaults and status codes follow TEI's own router (`router/src/http/types.rs` and
//! `server.rs`): errors are `{"error", "error_type"}` with `error_type` one of TEI's
//! `Unhealthy`, `Backend`, `Overloaded`, `Validation`, `Tokenizer`, `Empty`; an empty batch is a
//! 400 (`Empty`), a validation failure a 422 (TEI also answers an over-long input with
//! `truncate: false` with 422 `Validation`), a backend failure a 424, overload a 429.
//! `truncate` defaults to true, as TEI's `--auto-truncate` does. One addition: an optional
//! `model` picks one of several served models (TEI serves one).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_count, parse_body, reply};
use crate::backend::Backend;
use crate::embed::{EmbedParams, Input};
use crate::error::{Error, Result};
use crate::router::App;
use crate::spec::ModelKind;
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

/// The status and `error_type` TEI answers an error with (by the core's status, so error kinds
/// added later map without a change here).
pub fn error_kind(e: &Error) -> (u16, ErrorType) {
    // TEI answers a full queue with 429 `overloaded` (other APIs: 503), with `Retry-After`.
    if matches!(e, Error::Overloaded { .. }) {
        return (429, ErrorType::Overloaded);
    }
    match e.status() {
        400 if is_empty(e) => (400, ErrorType::Empty),
        400 => (422, ErrorType::Validation),
        429 => (429, ErrorType::Overloaded),
        503 => (503, ErrorType::Unhealthy),
        s if s >= 500 => (424, ErrorType::Backend),
        s => (s, ErrorType::Validation),
    }
}

const EMPTY: &str = "` cannot be empty";

fn empty(field: &str) -> Error {
    Error::bad_request(format!("`{field}{EMPTY}"))
}

fn is_empty(e: &Error) -> bool {
    matches!(e, Error::BadRequest(m) if m.starts_with('`') && m.ends_with(EMPTY))
}

fn items(inputs: Inputs) -> Result<Vec<Input>> {
    let list = match inputs {
        Inputs::One(i) => vec![i],
        Inputs::Many(v) => v,
    };
    if list.is_empty()
        || list
            .iter()
            .any(|i| matches!(i, InputItem::Ids(ids) if ids.is_empty()))
    {
        return Err(empty("inputs"));
    }
    Ok(list
        .into_iter()
        .map(|i| match i {
            InputItem::Text(t) => Input::Text(t),
            InputItem::Ids(ids) => Input::Tokens(ids.into_iter().map(i64::from).collect()),
        })
        .collect())
}

fn params(
    truncate: Option<bool>,
    direction: Option<TruncationDirection>,
    prompt_name: Option<String>,
) -> EmbedParams {
    EmbedParams {
        task: prompt_name,
        truncate: truncate.unwrap_or(true),
        side: direction.unwrap_or_default().into(),
        ..EmbedParams::default()
    }
}

/// `POST /embed`
pub fn embed<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: EmbedRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let inputs = items(req.inputs)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let mut params = params(req.truncate, req.truncation_direction, req.prompt_name);
    params.task = params.task.or(suffix_task.map(str::to_string));
    params.normalize = req.normalize.unwrap_or(true);
    params.dimensions = req.dimensions;
    let out = served.model.embed(&inputs, &params)?;
    reply(&EmbedResponse(out.vectors))
}

/// `POST /embed_all`
pub fn embed_all<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: EmbedAllRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let inputs = items(req.inputs)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let mut params = params(req.truncate, req.truncation_direction, req.prompt_name);
    params.task = params.task.or(suffix_task.map(str::to_string));
    let out = served.model.token_embeddings(&inputs, &params)?;
    reply(&EmbedAllResponse(out))
}

/// `POST /rerank` with `texts`
pub fn rerank<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: RerankRequest = parse_body(body)?;
    let served = app.models.reranker(req.model.as_deref())?;
    if req.texts.is_empty() {
        return Err(empty("texts"));
    }
    check_count(req.texts.len(), app.limits.max_documents, "texts")?;
    let (scores, _) = if req.raw_scores {
        served.model.raw_scores(&req.query, &req.texts)?
    } else {
        served.model.scores(&req.query, &req.texts)?
    };
    let mut ranks: Vec<Rank> = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| Rank {
            index,
            text: req.return_text.then(|| req.texts[index].clone()),
            score,
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    reply(&RerankResponse(ranks))
}

/// `POST /similarity`
pub fn similarity<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: SimilarityRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    if req.inputs.sentences.is_empty() {
        return Err(empty("inputs.sentences"));
    }
    check_count(
        req.inputs.sentences.len() + 1,
        app.limits.max_inputs,
        "inputs",
    )?;
    let p = req.parameters.unwrap_or_default();
    let mut params = params(p.truncate, p.truncation_direction, p.prompt_name);
    params.task = params.task.or(suffix_task.map(str::to_string));
    let inputs: Vec<Input> = std::iter::once(req.inputs.source_sentence)
        .chain(req.inputs.sentences)
        .map(Input::Text)
        .collect();
    // Normalised vectors: the cosine is the dot product.
    let out = served.model.embed(&inputs, &params)?;
    let (source, rest) = out
        .vectors
        .split_first()
        .ok_or_else(|| Error::Backend("no vectors".into()))?;
    let sims = rest
        .iter()
        .map(|v| source.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect();
    reply(&SimilarityResponse(sims))
}

/// `POST /tokenize` with `inputs`
pub fn tokenize<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: TokenizeRequest = parse_body(body)?;
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let texts = match req.inputs {
        TokenizeInputs::One(t) => vec![t],
        TokenizeInputs::Many(v) => v,
    };
    if texts.is_empty() {
        return Err(empty("inputs"));
    }
    check_count(texts.len(), app.limits.max_inputs, "inputs")?;
    let task = req.prompt_name.or(suffix_task.map(str::to_string));
    let instruction = served.model.instruction(task.as_deref())?;
    let tokens = texts
        .iter()
        .map(|t| {
            let text = format!("{instruction}{t}");
            let spans = served
                .model
                .tokenizer()
                .spans(&text, req.add_special_tokens.unwrap_or(true))?;
            Ok(spans
                .into_iter()
                .map(|s| SimpleToken {
                    id: s.id,
                    text: s.text,
                    special: s.special,
                    start: s.span.map(|(a, _)| a),
                    stop: s.span.map(|(_, b)| b),
                })
                .collect())
        })
        .collect::<Result<Vec<_>>>()?;
    reply(&TokenizeResponse(tokens))
}

/// `POST /decode`
pub fn decode<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: DecodeRequest = parse_body(body)?;
    let (served, _) = app.models.embedder(req.model.as_deref())?;
    let seqs = match req.ids {
        InputIds::One(ids) => vec![ids],
        InputIds::Many(v) => v,
    };
    if seqs.is_empty() || seqs.iter().any(Vec::is_empty) {
        return Err(empty("ids"));
    }
    check_count(seqs.len(), app.limits.max_inputs, "inputs")?;
    let skip = req.skip_special_tokens.unwrap_or(true);
    let texts = seqs
        .iter()
        .map(|ids| served.model.tokenizer().decode(ids, skip))
        .collect::<Result<Vec<_>>>()?;
    reply(&DecodeResponse(texts))
}

/// `POST /`: what TEI's root route does for the served model's type — embed on an embedding
/// server, rerank on a reranker-only one. (Similarity and rerank bodies are picked out by the
/// route table before this.)
pub fn root<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    if app.models.embedders.is_empty() {
        rerank(app, body)
    } else {
        embed(app, body)
    }
}

/// `GET /info`
pub fn info<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let models: Vec<ServedModel> = app
        .models
        .list()
        .into_iter()
        .map(|(info, spec, _)| ServedModel {
            model_id: info.name.clone(),
            model_type: model_type(spec),
            max_input_length: spec.max_length,
        })
        .collect();
    let (info, spec, _) = app
        .models
        .list()
        .into_iter()
        .next()
        .ok_or_else(|| Error::ModelNotFound("this server has no model".into()))?;
    let (max_batch_tokens, max_concurrent) = match app.models.embedders.first() {
        Some(e) => (
            e.model.options().batch.max_tokens,
            e.model.options().batch.max_size,
        ),
        None => app.models.rerankers.first().map_or((0, 0), |r| {
            (
                r.model.options().batch.max_tokens,
                r.model.options().batch.max_size,
            )
        }),
    };
    reply(&Info {
        model_id: info.name.clone(),
        model_sha: None,
        model_dtype: dtype(info),
        served_model_name: info.name.clone(),
        model_type: model_type(spec),
        max_concurrent_requests: max_concurrent.max(1),
        max_input_length: spec.max_length,
        max_batch_tokens,
        max_batch_requests: None,
        max_client_batch_size: app.limits.max_inputs,
        auto_truncate: true,
        tokenization_workers: 1,
        version: app.version.clone(),
        sha: None,
        docker_label: None,
        models,
    })
}

fn model_type(spec: &crate::spec::ModelSpec) -> ModelType {
    match spec.kind {
        ModelKind::Embedding => ModelType::Embedding(EmbeddingModel {
            pooling: format!("{:?}", spec.pooling).to_lowercase(),
        }),
        ModelKind::CrossEncoder => ModelType::Reranker(ClassifierModel {
            id2label: [("0".to_string(), "LABEL_0".to_string())].into(),
            label2id: [("LABEL_0".to_string(), 0)].into(),
        }),
    }
}

/// TEI's `model_dtype` from the graph's weights (`float32`, `float16`, `int8`, …).
fn dtype(info: &crate::registry::ModelInfo) -> String {
    let label = info.quantization_level();
    match label {
        "F32" => "float32",
        "F16" => "float16",
        "BF16" => "bfloat16",
        "F64" => "float64",
        "Q8_0" => "int8",
        "Q4_0" => "int4",
        other => other,
    }
    .to_string()
}
