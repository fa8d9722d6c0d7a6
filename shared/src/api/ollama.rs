//! Ollama's API: `/api/embed`, the legacy `/api/embeddings`, the listing routes, and the seed
//! service's `/api/rerank`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use std::time::Instant;

use super::{check_count, parse_body, reply, texts};
use crate::backend::Backend;
use crate::embed::{EmbedParams, Input};
use crate::error::{Error, Result};
use crate::registry::ModelInfo;
use crate::router::App;
use crate::spec::{ModelKind, ModelSpec};

#[derive(Deserialize)]
struct EmbedRequest {
    model: Option<String>,
    input: Option<Value>,
    truncate: Option<bool>,
    dimensions: Option<usize>,
    options: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct EmbedResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
}

#[derive(Deserialize)]
struct LegacyRequest {
    model: Option<String>,
    prompt: Option<String>,
    options: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct LegacyResponse {
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Vec<String>>,
    top_n: Option<usize>,
    return_documents: Option<bool>,
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
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let inputs = texts(req.input, "input")?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let params = EmbedParams {
        task: option_task(&req.options)?.or(suffix_task.map(str::to_string)),
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
    let (served, suffix_task) = app.models.embedder(req.model.as_deref())?;
    let task = option_task(&req.options)?.or(suffix_task.map(str::to_string));
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

/// `POST /api/rerank` (the seed service's shape; `document` is the text).
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
    let results: Vec<Value> = ranking
        .results
        .iter()
        .map(|r| {
            let mut v = json!({"index": r.index, "relevance_score": r.score});
            if with_docs {
                v["document"] = Value::from(documents[r.index].clone());
            }
            v
        })
        .collect();
    reply(&json!({
        "model": req.model.unwrap_or_else(|| served.info.name.clone()),
        "results": results,
    }))
}

/// `GET /api/tags`
pub fn tags<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let models: Vec<Value> = app
        .models
        .list()
        .into_iter()
        .map(|(info, spec, _)| {
            json!({
                "name": info.name, "model": info.name, "modified_at": info.modified_at,
                "size": info.size, "digest": info.digest, "details": details(info, spec),
            })
        })
        .collect();
    reply(&json!({ "models": models }))
}

/// `GET /api/ps` (everything is always loaded).
pub fn ps<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    let models: Vec<Value> = app
        .models
        .list()
        .into_iter()
        .map(|(info, spec, _)| {
            json!({
                "name": info.name, "model": info.name, "size": info.size, "digest": info.digest,
                "details": details(info, spec), "expires_at": "9999-12-31T23:59:59Z",
                "size_vram": 0, "context_length": spec.max_length,
            })
        })
        .collect();
    reply(&json!({ "models": models }))
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
    reply(&json!({
        "license": "", "modelfile": "", "parameters": "", "template": "",
        "details": details(info, spec),
        "model_info": model_info,
        "capabilities": if embeds { ["embedding"] } else { ["rerank"] },
        "modified_at": info.modified_at,
    }))
}

/// `GET|HEAD /api/version`
pub fn version<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    reply(&json!({ "version": app.version }))
}

fn details(info: &ModelInfo, spec: &ModelSpec) -> Value {
    json!({
        "parent_model": "",
        "format": "onnx",
        "family": spec.model_type,
        "families": [spec.model_type],
        "parameter_size": parameter_size(info),
        "quantization_level": info.quantization.label(),
        "kind": match spec.kind { ModelKind::Embedding => "embedding", ModelKind::CrossEncoder => "rerank" },
    })
}

/// A rough parameter count from the file size and its bytes per weight (`570M`, `1.2B`).
fn parameter_size(info: &ModelInfo) -> String {
    use crate::spec::Quantization as Q;
    let bytes_per = match info.quantization {
        Q::None => 4.0,
        Q::Fp16 => 2.0,
        Q::Int8 | Q::Uint8 | Q::Quantized => 1.0,
        Q::Q4 | Q::Bnb4 => 0.5,
    };
    let params = info.size as f64 / bytes_per;
    if params >= 1e9 {
        format!("{:.1}B", params / 1e9)
    } else {
        format!("{:.0}M", params / 1e6)
    }
}
