//! The component's state (the models on this build's engine), built once per instance — or once for all instances, when Wizer
//! pre-initialises the component through [`wizer_initialize`](crate::bindings::Guest).
//!
//! Configuration comes from environment variables, as on the native server:
//! `EMBEDDINGS_MODEL_ID` and `RERANKER_MODEL_ID` name model directories in the component's
//! filesystem (`none` disables one; the `wasi:nn` graph has the directory's name), plus
//! `TASK_INSTRUCTIONS`, `DEFAULT_TASK`, `MAX_BODY_BYTES`, `MAX_INPUTS`, `MAX_DOCUMENTS`,
//! `MAX_REQUEST_TOKENS`, `MAX_BATCH_TOKENS`, `MAX_BATCH_SIZE` (default 4 in the tract build:
//! [`BatchLimits::on_one_thread`]), `API_KEY`.

use std::path::Path;
use std::sync::OnceLock;

use embedfn_core::batch::MAX_REQUEST_TOKENS;
use embedfn_core::files::{model_info, onnx_path, read_graph, read_model_dir};
use embedfn_core::{
    ApiKey, App, BatchLimits, Embedder, EmbedderOptions, Error, Limits, ModelKind, ModelSpec,
    Quantization, Registry, RerankOptions, Reranker, Result, Served, TextTokenizer,
};

/// The engine of this build: tract inside the component, or the host's `wasi:nn`.
#[cfg(feature = "tract")]
type Engine = crate::tract::TractBackend;
#[cfg(not(feature = "tract"))]
type Engine = crate::nn::NnBackend;

/// The engine for the model in `dir`, served as `name`.
fn engine(dir: &Path, name: &str) -> Result<Engine> {
    #[cfg(feature = "tract")]
    {
        let _ = name;
        let quantization = var("ONNX_QUANTIZATION").unwrap_or_default();
        let quantization = Quantization::parse(&quantization)
            .map_err(|e| Error::Model(format!("ONNX_QUANTIZATION: {e}")))?;
        crate::tract::TractBackend::load(&onnx_path(dir, quantization)?)
    }
    #[cfg(not(feature = "tract"))]
    {
        let _ = dir;
        Ok(crate::nn::NnBackend::new(name))
    }
}

static APP: OnceLock<std::result::Result<App<Engine>, String>> = OnceLock::new();

/// The app, built on first use.
pub fn app() -> std::result::Result<&'static App<Engine>, &'static str> {
    APP.get_or_init(|| build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(String::as_str)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, default: usize) -> Result<usize> {
    var(name).map_or(Ok(default), |v| {
        v.trim()
            .parse()
            .map_err(|_| Error::Model(format!("{name}={v:?} is not a number")))
    })
}

fn model_dir(name: &str, default: &str) -> Option<String> {
    let dir = var(name).unwrap_or_else(|| default.to_string());
    (!dir.eq_ignore_ascii_case("none")).then_some(dir)
}

/// Reads one model directory: spec, tokenizer, reported facts, and its graph's name.
fn load(dir: &str, expected: ModelKind) -> Result<(ModelSpec, TextTokenizer, Served<()>)> {
    let path = Path::new(dir);
    let files = read_model_dir(path)?;
    let mut spec = ModelSpec::from_files(&files)?;
    if spec.kind != expected {
        return Err(Error::Model(format!(
            "{dir} is a {:?} model, expected {expected:?}",
            spec.kind
        )));
    }
    let tokenizer = TextTokenizer::from_bytes(&files.tokenizer_json)?;
    let name = path
        .file_name()
        .map_or_else(|| dir.to_string(), |n| n.to_string_lossy().into_owned());
    // The ONNX file lives with the host; it is reported when the component can see it too.
    let onnx = onnx_path(path, Quantization::None).unwrap_or_default();
    let graph = read_graph(&onnx).ok();
    // Batch-dependent graphs (dynamic quantization) run one sequence per pass here too.
    if let Some(graph) = &graph {
        spec.graph = graph.facts();
    }
    let info = model_info(
        name,
        dir,
        &onnx,
        Quantization::None,
        graph.map(|g| g.weights),
    );
    Ok((spec, tokenizer, Served { info, model: () }))
}

fn build() -> Result<App<Engine>> {
    let instructions =
        var("TASK_INSTRUCTIONS").is_none_or(|v| !matches!(v.as_str(), "0" | "false"));
    let max_request_tokens = number("MAX_REQUEST_TOKENS", MAX_REQUEST_TOKENS)?;
    // tract runs the model on this one thread; `wasi:nn` hosts run it on their own threads.
    let default_batch = if cfg!(feature = "tract") {
        BatchLimits::default().on_one_thread()
    } else {
        BatchLimits::default()
    };
    let batch = BatchLimits {
        max_tokens: number("MAX_BATCH_TOKENS", default_batch.max_tokens)?.max(1),
        max_size: number("MAX_BATCH_SIZE", default_batch.max_size)?.max(1),
    };
    let embedder = model_dir("EMBEDDINGS_MODEL_ID", "/models/embedder")
        .map(|dir| -> Result<_> {
            let (spec, tokenizer, served) = load(&dir, ModelKind::Embedding)?;
            let backend = engine(Path::new(&dir), &served.info.name)?;
            let options = EmbedderOptions {
                instructions,
                default_task: var("DEFAULT_TASK"),
                max_request_tokens,
                batch,
                ..EmbedderOptions::default()
            };
            Ok(Served {
                info: served.info,
                model: Embedder::new(spec, tokenizer, backend, options)?,
            })
        })
        .transpose()?;
    let reranker = model_dir("RERANKER_MODEL_ID", "none")
        .map(|dir| -> Result<_> {
            let (spec, tokenizer, served) = load(&dir, ModelKind::CrossEncoder)?;
            let backend = engine(Path::new(&dir), &served.info.name)?;
            let options = RerankOptions {
                max_request_tokens,
                batch,
                ..RerankOptions::default()
            };
            Ok(Served {
                info: served.info,
                model: Reranker::new(spec, tokenizer, backend, options),
            })
        })
        .transpose()?;
    let defaults = Limits::default();
    let mut app = App::new(Registry::single(embedder, reranker));
    app.limits = Limits {
        max_body_bytes: number("MAX_BODY_BYTES", defaults.max_body_bytes)?,
        max_inputs: number("MAX_INPUTS", defaults.max_inputs)?,
        max_documents: number("MAX_DOCUMENTS", defaults.max_documents)?,
    };
    app.api_key = var("API_KEY").map(ApiKey::new);
    Ok(app)
}
