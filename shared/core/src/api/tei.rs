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

mod types;

pub use types::*;

use super::{check_count, parse_body, reply};
use crate::app::App;
use crate::backend::Backend;
use crate::batch::RequestTokens;
use crate::embed::{EmbedParams, Input};
use crate::error::{Error, Result};
use crate::spec::ModelKind;

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
    let (served, task) = app
        .models
        .embedder_for(req.model.as_deref(), req.prompt_name, None)?;
    let inputs = items(req.inputs)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let mut params = params(req.truncate, req.truncation_direction, task);
    params.normalize = req.normalize.unwrap_or(true);
    params.dimensions = req.dimensions;
    let out = served.model.embed(&inputs, &params)?;
    reply(&EmbedResponse(out.vectors))
}

/// `POST /embed_all`
pub fn embed_all<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: EmbedAllRequest = parse_body(body)?;
    let (served, task) = app
        .models
        .embedder_for(req.model.as_deref(), req.prompt_name, None)?;
    let inputs = items(req.inputs)?;
    check_count(inputs.len(), app.limits.max_inputs, "inputs")?;
    let params = params(req.truncate, req.truncation_direction, task);
    let out = served
        .model
        .token_embeddings(&inputs, &params, app.limits.max_embed_all_values)?;
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
    let p = req.parameters.unwrap_or_default();
    let (served, task) = app
        .models
        .embedder_for(req.model.as_deref(), p.prompt_name, None)?;
    if req.inputs.sentences.is_empty() {
        return Err(empty("inputs.sentences"));
    }
    check_count(
        req.inputs.sentences.len() + 1,
        app.limits.max_inputs,
        "inputs",
    )?;
    let params = params(p.truncate, p.truncation_direction, task);
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
    let (served, task) = app
        .models
        .embedder_for(req.model.as_deref(), req.prompt_name, None)?;
    let texts = match req.inputs {
        TokenizeInputs::One(t) => vec![t],
        TokenizeInputs::Many(v) => v,
    };
    if texts.is_empty() {
        return Err(empty("inputs"));
    }
    check_count(texts.len(), app.limits.max_inputs, "inputs")?;
    let instruction = served.model.instruction(task.as_deref())?;
    // Counted as it goes: the answer (a few dozen bytes a token) is bounded like a request's
    // tokens, and a text past the limit is not tokenized further than that.
    let mut count = RequestTokens::new(served.model.options().max_request_tokens);
    let tokens = texts
        .iter()
        .map(|t| {
            let text = format!("{instruction}{t}");
            let room = count.remaining();
            let spans = served.model.tokenizer().spans(
                &text,
                req.add_special_tokens.unwrap_or(true),
                room,
            )?;
            let spans = spans.ok_or_else(|| count.exceeded())?;
            count.add(spans.len())?;
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
