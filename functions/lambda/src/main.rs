//! `embedfn`: text embeddings and reranking on ONNX Runtime behind Ollama-, OpenAI-, Jina- and
//! Cohere-compatible routes.
//!
//! State (ONNX Runtime, the models, the route table's [`App`]) is built once here; the HTTP
//! server then hands each request to the core's route table. Outside AWS Lambda it serves on
//! `HOST:PORT`; the Lambda runtime mode plugs in at [`run`].

mod config;
mod models;
mod ort_backend;
mod runtime;
mod server;

use std::process::ExitCode;

use embedfn_core::{App, Registry};

use crate::config::Config;
use crate::ort_backend::{OrtBackend, SessionOptions};

/// Builds the app from the configuration: loads ONNX Runtime and every configured model.
fn build(config: &Config) -> Result<App<OrtBackend>, String> {
    let (lib, env) = runtime::init().map_err(|e| e.to_string())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let session = SessionOptions {
        intra_threads: config.intra_threads,
        cuda: config.cuda,
    };
    let embedder = config
        .embeddings_model
        .as_deref()
        .map(|id| models::embedder(id, config, &env, session))
        .transpose()
        .map_err(|e| e.to_string())?;
    let reranker = config
        .reranker_model
        .as_deref()
        .map(|id| models::reranker(id, config, &env, session))
        .transpose()
        .map_err(|e| e.to_string())?;
    if embedder.is_none() && reranker.is_none() {
        return Err(
            "both EMBEDDINGS_MODEL_ID and RERANKER_MODEL_ID are 'none': nothing to serve".into(),
        );
    }
    let mut app = App::new(Registry { embedder, reranker });
    app.limits = config.limits;
    Ok(app)
}

async fn run(config: Config, app: App<OrtBackend>) -> Result<(), String> {
    let addr = format!("{}:{}", config.host, config.port);
    server::serve(app, &addr)
        .await
        .map_err(|e| format!("server on {addr}: {e}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = Config::from_env()
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let app = build(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(run(config, app))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("embedfn: {e}");
            ExitCode::FAILURE
        }
    }
}
