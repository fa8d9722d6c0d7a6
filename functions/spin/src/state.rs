//! The component's state (the models on this build's engine), built once per instance — or
//! once for all instances, when Wizer pre-initialises the component through
//! [`wizer_initialize`](crate::bindings::Guest).
//!
//! Settings are the core's ([`Settings`], `docs/configuration.md`), read from the environment
//! with the component's defaults ([`Place::Component`]): `EMBEDDINGS_MODEL_ID` and
//! `RERANKER_MODEL_ID` name model directories in the component's filesystem (the `wasi:nn` graph
//! has the directory's name); the tract build runs passes of at most
//! [`BatchLimits::on_one_thread`] sequences unless `MAX_BATCH_SIZE` says otherwise. They come
//! from the live WASI environment, never std's copy of it, so that nothing of the environment at
//! pre-initialisation (an `API_KEY`) stays in the snapshot's memory.

use std::path::Path;
use std::sync::OnceLock;

use embedfn_core::files::{model_info, onnx_path, read_graph, read_model_dir};
use embedfn_core::sentence::SENTENCE_EMBEDDING;
use embedfn_core::{
    App, BatchLimits, Embedder, EmbedderOptions, Error, ModelKind, ModelSpec, Place, Quantization,
    Registry, RerankOptions, Reranker, Result, Served, Settings, TextTokenizer,
};

/// The engine of this build: tract inside the component, or the host's `wasi:nn`.
#[cfg(feature = "tract")]
type Engine = embedfn_tract::TractBackend;
#[cfg(not(feature = "tract"))]
type Engine = crate::nn::NnBackend;

/// The engine for the model in `dir`, served as `name`.
fn engine(dir: &Path, name: &str, quantization: Quantization, spec: &ModelSpec) -> Result<Engine> {
    let output = spec.sentence_output.then_some(SENTENCE_EMBEDDING);
    #[cfg(feature = "tract")]
    {
        let _ = name;
        embedfn_tract::TractBackend::load(&onnx_path(dir, quantization)?, output)
    }
    #[cfg(not(feature = "tract"))]
    {
        let _ = (dir, quantization);
        Ok(crate::nn::NnBackend::new(name, output))
    }
}

static APP: OnceLock<std::result::Result<App<Engine>, String>> = OnceLock::new();

/// The app, built on first use.
pub fn app() -> std::result::Result<&'static App<Engine>, &'static str> {
    APP.get_or_init(|| build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(String::as_str)
}

/// Reads one model directory: its spec, tokenizer and reported facts, with its engine.
fn load(
    dir: &str,
    expected: ModelKind,
    quantization: Quantization,
) -> Result<(ModelSpec, TextTokenizer, Served<Engine>)> {
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
    spec.check_graph()?;
    let backend = engine(path, &name, quantization, &spec)?;
    let info = model_info(
        name,
        dir,
        &onnx,
        Quantization::None,
        graph.map(|g| g.weights),
    );
    Ok((
        spec,
        tokenizer,
        Served {
            info,
            model: backend,
        },
    ))
}

/// The component's live environment (WASI `get-environment`): what the host gives this
/// instance now. std's copy would be taken once, at pre-initialisation, into the snapshot.
pub fn environment() -> Vec<(String, String)> {
    wasip2::cli::environment::get_environment()
}

/// A variable of the live environment.
pub fn var(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn build() -> Result<App<Engine>> {
    let env = environment();
    let settings = Settings::from_lookup(|k| var(&env, k), Place::Component)
        .map_err(|e| Error::Model(e.to_string()))?;
    // tract runs the model on this one thread; `wasi:nn` hosts run it on their own threads.
    let batch = settings.batch(if cfg!(feature = "tract") {
        BatchLimits::default().on_one_thread()
    } else {
        BatchLimits::default()
    });
    let embedders = settings
        .embeddings_models
        .iter()
        .map(|dir| -> Result<_> {
            let (spec, tokenizer, served) = load(dir, ModelKind::Embedding, settings.quantization)?;
            let options = EmbedderOptions {
                instructions: settings.task_instructions,
                default_task: settings.default_task.clone(),
                max_request_tokens: settings.max_request_tokens,
                batch,
                ..EmbedderOptions::default()
            };
            Ok(Served {
                info: served.info,
                model: Embedder::new(spec, tokenizer, served.model, options)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rerankers = settings
        .reranker_models
        .iter()
        .map(|dir| -> Result<_> {
            let (spec, tokenizer, served) =
                load(dir, ModelKind::CrossEncoder, settings.quantization)?;
            let options = RerankOptions {
                max_request_tokens: settings.max_request_tokens,
                batch,
                ..RerankOptions::default()
            };
            Ok(Served {
                info: served.info,
                model: Reranker::new(spec, tokenizer, served.model, options),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut app = App::new(Registry {
        embedders,
        rerankers,
    });
    app.limits = settings.limits;
    app.cors = settings.cors;
    // `API_KEY` is read per request ([`crate::handle`]), never kept: a key present at
    // pre-initialisation must not be frozen into the shipped component.
    Ok(app)
}
