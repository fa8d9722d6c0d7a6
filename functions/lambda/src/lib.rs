//! The native side of embedfn: configuration, ONNX Runtime (`ort`) sessions, model loading, and
//! the two adapters of the `embedfn` binary — the local HTTP server and the AWS Lambda runtime.
//! `embedfn-host` reuses the configuration, the runtime loader and the session builder, so
//! every native engine is configured the same way.

pub mod bridge;
pub mod config;
pub mod lambda;
pub mod models;
pub mod ort_backend;
pub mod ort_cache;
pub mod runtime;
pub mod server;

use std::sync::Arc;

use embedfn_core::{App, Budget, Metrics, Registry};

use crate::config::Config;
use crate::models::Engine;
use crate::ort_backend::SessionOptions;

/// Builds the app from the configuration: loads ONNX Runtime and every configured model.
pub fn build(config: &Config) -> Result<App<Engine>, String> {
    let (lib, env) = runtime::init().map_err(|e| e.to_string())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let session = SessionOptions {
        intra_threads: config.intra_threads,
        cuda: config.cuda,
    };
    let metrics = Arc::new(Metrics::default());
    let budget = Arc::new(Budget::new(
        config.max_memory,
        config.admission.max_queue,
        config.admission.max_wait,
    ));
    metrics.watch_budget(budget.clone());
    let shared = models::Shared {
        metrics: metrics.clone(),
        budget: budget.clone(),
    };
    // Each listed model loads once; requests choose one by `model` (the first is the default).
    let embedders = config
        .embeddings_models
        .iter()
        .map(|id| models::embedder(id, config, &env, session, &shared))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let rerankers = config
        .reranker_models
        .iter()
        .map(|id| models::reranker(id, config, &env, session, &shared))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if embedders.is_empty() && rerankers.is_empty() {
        return Err(
            "both EMBEDDINGS_MODEL_ID and RERANKER_MODEL_ID are 'none': nothing to serve".into(),
        );
    }
    // What the process holds now (runtime, sessions, weights, tokenizers) is set aside; passes
    // share the rest.
    let resident = config::resident_memory().unwrap_or(0);
    budget.set_resident(resident).map_err(|e| e.to_string())?;
    tracing::info!(
        max_memory_mib = config.max_memory >> 20,
        from = config.max_memory_source,
        resident_mib = resident >> 20,
        "memory budget"
    );
    let mut app = App::new(Registry {
        embedders,
        rerankers,
    });
    app.limits = config.limits;
    app.metrics = metrics;
    app.api_key = config.api_key.clone();
    Ok(app)
}
