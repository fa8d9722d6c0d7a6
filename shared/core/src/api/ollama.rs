//! Ollama's API: `/api/embed`, the legacy `/api/embeddings`, the listing routes, and an Ollama-style
//! `/api/rerank` (`{model, query, documents, top_n}` → `{results: [{index, document,
//! relevance_score}]}`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use std::time::Instant;

use super::{check_count, parse_body, reply, texts};
use crate::app::App;
use crate::backend::Backend;
use crate::embed::{EmbedParams, Input};
use crate::error::{Error, Result};
use crate::registry::ModelInfo;
use crate::spec::{ModelKind, ModelSpec};

/// `POST /api/embed`
#[derive(Deserialize, ToSchema)]
#[schema(as = OllamaEmbedRequest, example = json!({"input": ["Hello", "world"], "truncate": true}))]
pub struct EmbedRequest {
    /// A served model's name (default: the first embedder).
    pub model: Option<String>,
    /// A string or an array of strings.
    pub input: Option<Value>,
    /// Cut over-long inputs (default true); false: a 400.
    pub truncate: Option<bool>,
    /// Matryoshka truncation.
    pub dimensions: Option<usize>,
    /// `options.task` picks a task adapter.
    pub options: Option<Map<String, Value>>,
}

/// The vectors of `POST /api/embed`.
#[derive(Serialize, ToSchema)]
#[schema(as = OllamaEmbedResponse)]
pub struct EmbedResponse {
    /// The model name as asked.
    pub model: String,
    /// One vector per input.
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds.
    pub total_duration: u64,
    /// Always 0 (models stay loaded).
    pub load_duration: u64,
    /// Tokens run.
    pub prompt_eval_count: usize,
}

/// `POST /api/embeddings` (legacy)
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"prompt": "Hello"}))]
pub struct LegacyRequest {
    /// A served model's name.
    pub model: Option<String>,
    /// The text.
    pub prompt: Option<String>,
    /// `options.task` picks a task adapter.
    pub options: Option<Map<String, Value>>,
}

/// One vector.
#[derive(Serialize, ToSchema)]
pub struct LegacyResponse {
    /// The vector (`[]` for an empty prompt).
    pub embedding: Vec<f32>,
}

/// `POST /api/show` body.
#[derive(Deserialize, ToSchema)]
pub struct ShowRequest {
    /// A served model's name.
    pub model: Option<String>,
    /// The older name of `model`.
    pub name: Option<String>,
}

/// `POST /api/rerank` body.
#[derive(Deserialize, ToSchema)]
#[schema(as = OllamaRerankRequest, example = json!({"query": "q", "documents": ["a", "b"], "top_n": 1}))]
pub struct RerankRequest {
    /// A served reranker's name.
    pub model: Option<String>,
    /// The query.
    pub query: Option<String>,
    /// The documents.
    pub documents: Option<Vec<String>>,
    /// Keep the best n.
    pub top_n: Option<usize>,
    /// Include each document's text (default true).
    pub return_documents: Option<bool>,
}

/// One ranked document.
#[derive(Serialize, ToSchema)]
#[schema(as = OllamaRerankResult)]
pub struct RerankResult {
    /// Position in `documents`.
    pub index: usize,
    /// sigmoid(logit)
    pub relevance_score: f32,
    /// The text, unless `return_documents` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// The ranking, best first.
#[derive(Serialize, ToSchema)]
#[schema(as = OllamaRerankResponse)]
pub struct RerankResponse {
    /// The model name as asked.
    pub model: String,
    /// Ranked documents.
    pub results: Vec<RerankResult>,
}

/// `details` of a listed model.
#[derive(Serialize, ToSchema)]
pub struct Details {
    /// Always "".
    pub parent_model: String,
    /// `onnx`
    pub format: String,
    /// `model_type` of config.json.
    pub family: String,
    /// `[family]`
    pub families: Vec<String>,
    /// Counted parameters (`22.7M`).
    pub parameter_size: String,
    /// The weights' type (`F32`, `F16`, `Q8_0`, `Q4_0`).
    pub quantization_level: String,
    /// `embedding` or `rerank`.
    pub kind: String,
}

/// One model of the tags list.
#[derive(Serialize, ToSchema)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its name.
    pub model: String,
    /// Time of its ONNX file.
    pub modified_at: String,
    /// Bytes of its ONNX file(s).
    pub size: u64,
    /// A stable digest.
    pub digest: String,
    /// Facts.
    pub details: Details,
}

/// The served models (`GET /api/tags`).
#[derive(Serialize, ToSchema)]
pub struct Tags {
    /// Every served model.
    pub models: Vec<Listed>,
}

/// One model of the running list.
#[derive(Serialize, ToSchema)]
pub struct Loaded {
    /// Its name.
    pub name: String,
    /// Its name.
    pub model: String,
    /// Bytes of its ONNX file(s).
    pub size: u64,
    /// A stable digest.
    pub digest: String,
    /// Facts.
    pub details: Details,
    /// Never (models stay loaded).
    pub expires_at: String,
    /// 0
    pub size_vram: u64,
    /// Its token limit.
    pub context_length: usize,
}

/// The loaded models (`GET /api/ps`).
#[derive(Serialize, ToSchema)]
pub struct Running {
    /// Every served model.
    pub models: Vec<Loaded>,
}

/// What `POST /api/show` answers.
#[derive(Serialize, ToSchema)]
pub struct ShowResponse {
    /// ""
    pub license: String,
    /// ""
    pub modelfile: String,
    /// ""
    pub parameters: String,
    /// ""
    pub template: String,
    /// Facts.
    pub details: Details,
    /// `general.architecture`, `<family>.context_length`, `<family>.embedding_length`, …
    pub model_info: Map<String, Value>,
    /// `["embedding"]` or `["rerank"]`
    pub capabilities: Vec<String>,
    /// Time of its ONNX file.
    pub modified_at: String,
}

/// The server's version.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// embedfn's version.
    pub version: String,
}

/// `options.task`, if given; it must be a string.
fn option_task(options: &Option<Map<String, Value>>) -> Result<Option<String>> {
    match options.as_ref().and_then(|o| o.get("task")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.clone())),
        Some(_) => Err(Error::bad_request("'options.task' must be a string")),
    }
}

/// `POST /api/embed`
pub fn embed<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let started = Instant::now();
    let req: EmbedRequest = parse_body(body)?;
    let (served, task) =
        app.models
            .embedder_for(req.model.as_deref(), option_task(&req.options)?, None)?;
    let inputs = texts(req.input, "input")?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let params = EmbedParams {
        task,
        dimensions: req.dimensions,
        truncate: req.truncate.unwrap_or(true),
        ..EmbedParams::default()
    };
    let out = served.model.embed(&inputs, &params)?;
    let elapsed = started.elapsed().as_nanos() as u64;
    reply(&EmbedResponse {
        model: req.model.unwrap_or_else(|| served.info.name.clone()),
        embeddings: out.vectors,
        total_duration: elapsed,
        load_duration: 0,
        prompt_eval_count: out.prompt_tokens,
    })
}

/// `POST /api/embeddings` (legacy: one prompt, one vector; an empty prompt gives `[]`).
pub fn embeddings<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: LegacyRequest = parse_body(body)?;
    let (served, task) =
        app.models
            .embedder_for(req.model.as_deref(), option_task(&req.options)?, None)?;
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return reply(&LegacyResponse { embedding: vec![] });
    }
    let params = EmbedParams {
        task,
        ..EmbedParams::default()
    };
    let mut out = served.model.embed(&[Input::Text(prompt)], &params)?;
    reply(&LegacyResponse {
        embedding: out.vectors.pop().unwrap_or_default(),
    })
}

/// `POST /api/rerank` (`document` in each result is the text).
pub fn rerank<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: RerankRequest = parse_body(body)?;
    let served = app.models.reranker(req.model.as_deref())?;
    let (query, top_n) = super::rerank::check_request(
        app.limits.max_documents,
        req.query,
        req.documents.as_ref().map(Vec::len),
        req.top_n,
    )?;
    let documents = req.documents.unwrap_or_default();
    let ranking = served.model.rerank(&query, &documents, top_n)?;
    let with_docs = req.return_documents.unwrap_or(true);
    let results = ranking
        .results
        .iter()
        .map(|r| RerankResult {
            index: r.index,
            relevance_score: r.score,
            document: with_docs.then(|| documents[r.index].clone()),
        })
        .collect();
    reply(&RerankResponse {
        model: req.model.unwrap_or_else(|| served.info.name.clone()),
        results,
    })
}

/// `GET /api/tags`
pub fn tags<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let models = app
        .models
        .list()
        .into_iter()
        .map(|(info, spec, _)| Listed {
            name: info.name.clone(),
            model: info.name.clone(),
            modified_at: info.modified_at.clone(),
            size: info.size,
            digest: info.digest.clone(),
            details: details(info, spec),
        })
        .collect();
    reply(&Tags { models })
}

/// `GET /api/ps` (everything is always loaded).
pub fn ps<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let models = app
        .models
        .list()
        .into_iter()
        .map(|(info, spec, _)| Loaded {
            name: info.name.clone(),
            model: info.name.clone(),
            size: info.size,
            digest: info.digest.clone(),
            details: details(info, spec),
            expires_at: "9999-12-31T23:59:59Z".into(),
            size_vram: 0,
            context_length: spec.max_length,
        })
        .collect();
    reply(&Running { models })
}

/// `POST /api/show`
pub fn show<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: ShowRequest = parse_body(body)?;
    let name = req
        .model
        .or(req.name)
        .ok_or_else(|| Error::bad_request("'model' is required"))?;
    let (info, spec, embeds) = app.models.find(&name)?;
    let family = spec.model_type.clone();
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), Value::from(family.clone()));
    if let Some(w) = &info.weights {
        model_info.insert("general.parameter_count".into(), json!(w.parameters));
    }
    for (key, value) in [
        ("context_length", json!(spec.max_length)),
        ("embedding_length", json!(spec.dims)),
        ("block_count", json!(spec.num_layers)),
        (
            "pooling_type",
            json!(format!("{:?}", spec.pooling).to_lowercase()),
        ),
        ("matryoshka_dimensions", json!(spec.matryoshka_dims)),
        ("tasks", json!(spec.tasks)),
    ] {
        model_info.insert(format!("{family}.{key}"), value);
    }
    reply(&ShowResponse {
        license: String::new(),
        modelfile: String::new(),
        parameters: String::new(),
        template: String::new(),
        details: details(info, spec),
        model_info,
        capabilities: vec![if embeds { "embedding" } else { "rerank" }.into()],
        modified_at: info.modified_at.clone(),
    })
}

/// `GET|HEAD /api/version`
pub fn version<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    reply(&Version {
        version: app.version.clone(),
    })
}

fn details(info: &ModelInfo, spec: &ModelSpec) -> Details {
    Details {
        parent_model: String::new(),
        format: "onnx".into(),
        family: spec.model_type.clone(),
        families: vec![spec.model_type.clone()],
        parameter_size: info.parameter_size(),
        quantization_level: info.quantization_level().into(),
        kind: match spec.kind {
            ModelKind::Embedding => "embedding",
            ModelKind::CrossEncoder => "rerank",
        }
        .into(),
    }
}
