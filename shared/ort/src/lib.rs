//! embedfn's native engine: ONNX Runtime (`ort`, loaded at run time) behind the core's
//! [`Backend`](embedfn_core::Backend), and everything a native adapter needs to serve models
//! with it: the runtime loader ([`runtime`]), sessions ([`ort_backend`]) and their
//! optimized-graph cache ([`ort_cache`]), model directories and hub downloads ([`models`]), the
//! host facts the settings leave open ([`system`]), and [`build`], which turns
//! [`Settings`] into a served [`App`]. The `embedfn` binary and embedfn-host both use it, so
//! every native engine is configured the same way.

pub mod models;
pub mod ort_backend;
pub mod ort_cache;
pub mod runtime;
pub mod system;

use std::sync::Arc;

use embedfn_core::{App, Budget, Metrics, Registry, Settings};

use crate::models::Engine;

/// Builds the app from the settings: loads ONNX Runtime and every configured model.
pub fn build(settings: &Settings) -> Result<App<Engine>, String> {
    let (lib, env) = runtime::init().map_err(|e| e.to_string())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let session = system::session_options(settings);
    tracing::info!(
        threads = session.intra_threads,
        spinning = session.spinning,
        "ONNX Runtime sessions"
    );
    let metrics = Arc::new(Metrics::default());
    let (max_memory, max_memory_source) = system::memory_budget(settings);
    let budget = Arc::new(Budget::new(
        max_memory,
        settings.admission.max_queue,
        settings.admission.max_wait,
    ));
    metrics.watch_budget(budget.clone());
    let shared = models::Shared {
        metrics: metrics.clone(),
        budget: budget.clone(),
    };
    // Each listed model loads once; requests choose one by `model` (the first is the default).
    let embedders = settings
        .embeddings_models
        .iter()
        .map(|id| models::embedder(id, settings, &env, session, &shared))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let rerankers = settings
        .reranker_models
        .iter()
        .map(|id| models::reranker(id, settings, &env, session, &shared))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if embedders.is_empty() && rerankers.is_empty() {
        return Err(
            "both EMBEDDINGS_MODEL_ID and RERANKER_MODEL_ID are 'none': nothing to serve".into(),
        );
    }
    // What the process holds now (runtime, sessions, weights, tokenizers) is set aside; passes
    // share the rest.
    let resident = system::resident_memory().unwrap_or(0);
    budget.set_resident(resident).map_err(|e| e.to_string())?;
    tracing::info!(
        max_memory_mib = max_memory >> 20,
        from = max_memory_source,
        resident_mib = resident >> 20,
        "memory budget"
    );
    let mut app = App::new(Registry {
        embedders,
        rerankers,
    });
    app.limits = settings.limits;
    app.metrics = metrics;
    app.api_key = settings.api_key.clone();
    app.cors = settings.cors.clone();
    Ok(app)
}
