//! `GET /health`: the served models, for load balancers and orchestrators.

use crate::app::App;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// `GET /health`
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
    /// The default embedding model.
    pub embedding_model: Option<String>,
    /// The default reranker.
    pub reranker_model: Option<String>,
    /// Every embedding model.
    pub embedding_models: Vec<String>,
    /// Every reranker.
    pub reranker_models: Vec<String>,
}

/// `GET /health`: 200 with the served models, or 503 once a worker that runs them has
/// stopped (the process is then on its way out, for its supervisor to restart it).
pub fn health<B: Backend>(app: &App<B>, _body: &[u8]) -> Result<Vec<u8>> {
    if let Some(why) = app.metrics.unhealthy() {
        return Err(Error::Unhealthy(why));
    }
    let embedding_models: Vec<String> = app
        .models
        .embedders
        .iter()
        .map(|s| s.info.name.clone())
        .collect();
    let reranker_models: Vec<String> = app
        .models
        .rerankers
        .iter()
        .map(|s| s.info.name.clone())
        .collect();
    crate::api::reply(&Health {
        status: "ok".into(),
        embedding_model: embedding_models.first().cloned(),
        reranker_model: reranker_models.first().cloned(),
        embedding_models,
        reranker_models,
    })
}
