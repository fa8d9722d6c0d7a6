//! Turning a model id (a local directory or a Hugging Face repo id) into a served model:
//! download when needed, read the files, derive the spec, build the ONNX Runtime session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use embedfn_core::dynamic::{Batcher, BatchingOptions};
use embedfn_core::files::{model_info, onnx_path, read_graph, read_model_dir};
use embedfn_core::sentence::{module_paths, SENTENCE_EMBEDDING};
use embedfn_core::{
    BatchLimits, Budget, Embedder, EmbedderOptions, Error, Metrics, ModelInfo, ModelKind,
    ModelSpec, RerankOptions, Reranker, Result, Served, TextTokenizer,
};

use ort::environment::Environment;

use crate::ort_backend::{OrtBackend, SessionOptions};
use embedfn_core::Settings;

/// The backend every served model runs on: ONNX Runtime behind the dynamic batcher.
pub type Engine = Batcher<OrtBackend>;

/// Files fetched from the hub besides the ONNX graph; missing optional ones are fine.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
/// (`modules.json` too, fetched with the configs of the modules it lists.)
const OPTIONAL: [&str; 4] = [
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer_config.json",
];

/// The local directory of a model id: the id itself when it is a directory, else a hub download
/// into `MODEL_CACHE_DIR` (only the files the chosen quantization needs).
pub fn resolve(id: &str, settings: &Settings) -> Result<PathBuf> {
    let local = Path::new(id);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    if local.is_absolute() || id.starts_with('.') || id.split('/').count() != 2 {
        return Err(Error::Model(format!(
            "model '{id}' is neither a directory nor a Hugging Face repo id (org/name)"
        )));
    }
    download(id, settings)
}

fn download(id: &str, settings: &Settings) -> Result<PathBuf> {
    let hub_err = |file: &str, e: &dyn std::fmt::Display| {
        Error::Model(format!(
            "cannot get {file} of '{id}' from the Hugging Face hub: {e}"
        ))
    };
    let onnx = format!("onnx/{}", settings.quantization.file_name());
    let hub = Hub::open(id, settings).map_err(|e| hub_err("the API", &e))?;
    let get = |file: &str| hub.get(file);
    tracing::info!(model = id, file = %onnx, "fetching model files");
    let mut dir = None;
    for file in REQUIRED.iter().copied().chain([onnx.as_str()]) {
        let path = get(file).map_err(|e| hub_err(file, &e))?;
        if file == "config.json" {
            dir = path.parent().map(Path::to_path_buf);
        }
    }
    for file in OPTIONAL {
        let _ = get(file);
    }
    // Each module modules.json lists keeps its own config (a Dense module's width).
    if let Some(modules) = get("modules.json")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        for path in module_paths(&modules) {
            let _ = get(&format!("{path}/config.json"));
        }
    }
    // External weights (jina-embeddings-v3 ships onnx/model.onnx + onnx/model.onnx_data).
    let _ = get(&format!("{onnx}_data"));
    dir.ok_or_else(|| Error::Model(format!("'{id}': no config.json")))
}

/// Where hub files come from: the network, or only the local cache when `HF_HUB_OFFLINE` is set.
enum Hub {
    Online(hf_hub::api::sync::ApiRepo),
    Offline(hf_hub::CacheRepo),
}

impl Hub {
    fn open(id: &str, settings: &Settings) -> std::result::Result<Self, String> {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if offline {
            let cache = hf_hub::Cache::new(PathBuf::from(&settings.model_cache_dir));
            return Ok(Hub::Offline(cache.model(id.to_string())));
        }
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_cache_dir(PathBuf::from(&settings.model_cache_dir))
            .with_progress(true)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Hub::Online(api.model(id.to_string())))
    }

    fn get(&self, file: &str) -> std::result::Result<PathBuf, String> {
        match self {
            Hub::Online(repo) => repo.get(file).map_err(|e| e.to_string()),
            Hub::Offline(repo) => repo
                .get(file)
                .ok_or_else(|| "not in the cache and HF_HUB_OFFLINE is set".to_string()),
        }
    }
}

/// Loads one model directory as the given kind.
fn load(
    id: &str,
    expected: ModelKind,
    settings: &Settings,
    env: &Environment,
    session: SessionOptions,
) -> Result<(ModelInfo, ModelSpec, TextTokenizer, OrtBackend)> {
    let dir = resolve(id, settings)?;
    let files = read_model_dir(&dir)?;
    let mut spec = ModelSpec::from_files(&files)?;
    if spec.kind != expected {
        return Err(Error::Model(format!(
            "'{id}' is a {:?} model (from config.json architectures), expected {expected:?}",
            spec.kind
        )));
    }
    let onnx = onnx_path(&dir, settings.quantization)?;
    // The facts of the file the session opens (a fused sibling runs long inputs in linear memory).
    let graph = read_graph(&crate::ort_backend::session_file(&onnx))?;
    spec.graph = graph.facts();
    // Score blocks are held per intra-op thread.
    spec.graph.score_blocks *= u32::try_from(session.intra_threads).unwrap_or(u32::MAX);
    spec.check_graph()?;
    // The session takes most of start-up; the tokenizer (17 MB of JSON for Jina) parses beside it.
    let output = spec.sentence_output.then_some(SENTENCE_EMBEDDING);
    let (tokenizer, backend) = std::thread::scope(|s| {
        let backend = s.spawn(|| OrtBackend::load(env, &onnx, session, output));
        let tokenizer = TextTokenizer::from_bytes(&files.tokenizer_json);
        let backend = backend
            .join()
            .unwrap_or_else(|_| Err(Error::Model("session creation panicked".into())));
        (tokenizer, backend)
    });
    let (tokenizer, backend) = (tokenizer?, backend?);
    tracing::info!(
        model = id, onnx = %onnx.display(), device = backend.device, max_length = spec.max_length,
        dims = spec.dims, tasks = spec.tasks.len(), batch_invariant = spec.graph.batch_invariant,
        attention = ?spec.graph.attention, "model loaded"
    );
    let info = model_info(
        served_name(id),
        id,
        &onnx,
        settings.quantization,
        Some(graph.weights),
    );
    Ok((info, spec, tokenizer, backend))
}

/// The name a model is listed under: the hub id as given, or a local directory's last segment.
fn served_name(id: &str) -> String {
    let id = id.trim_end_matches('/');
    if Path::new(id).is_dir() {
        Path::new(id)
            .file_name()
            .map_or_else(|| id.to_string(), |n| n.to_string_lossy().into_owned())
    } else {
        id.to_string()
    }
}

/// What every model of the process shares: the metrics and the memory budget.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The process-wide memory budget.
    pub budget: Arc<Budget>,
}

/// A model loaded as `kind`, its session behind the dynamic batcher under the shared budget.
fn engine(
    id: &str,
    kind: ModelKind,
    settings: &Settings,
    env: &Environment,
    session: SessionOptions,
    shared: &Shared,
) -> Result<(ModelInfo, ModelSpec, TextTokenizer, Engine, BatchLimits)> {
    let (info, spec, tokenizer, backend) = load(id, kind, settings, env, session)?;
    let batch = settings.batch_on(backend.device);
    let batching = BatchingOptions {
        enabled: settings.dynamic_batching,
        limits: batch,
        wait: settings.batch_wait,
    };
    let backend = Batcher::for_model(
        backend,
        batching,
        shared.metrics.clone(),
        &spec,
        Some(shared.budget.clone()),
    )?;
    Ok((info, spec, tokenizer, backend, batch))
}

/// The embedding model, ready to serve.
pub fn embedder(
    id: &str,
    settings: &Settings,
    env: &Environment,
    session: SessionOptions,
    shared: &Shared,
) -> Result<Served<Embedder<Engine>>> {
    let (info, spec, tokenizer, backend, batch) =
        engine(id, ModelKind::Embedding, settings, env, session, shared)?;
    let options = EmbedderOptions {
        instructions: settings.task_instructions,
        default_task: settings.default_task.clone(),
        batch,
        max_request_tokens: settings.max_request_tokens,
        memory: Some(shared.budget.clone()),
    };
    Ok(Served {
        info,
        model: Embedder::new(spec, tokenizer, backend, options)?,
    })
}

/// The reranker, ready to serve.
pub fn reranker(
    id: &str,
    settings: &Settings,
    env: &Environment,
    session: SessionOptions,
    shared: &Shared,
) -> Result<Served<Reranker<Engine>>> {
    let (info, spec, tokenizer, backend, batch) =
        engine(id, ModelKind::CrossEncoder, settings, env, session, shared)?;
    let options = RerankOptions {
        batch,
        max_request_tokens: settings.max_request_tokens,
        memory: Some(shared.budget.clone()),
        ..RerankOptions::default()
    };
    Ok(Served {
        info,
        model: Reranker::new(spec, tokenizer, backend, options),
    })
}
