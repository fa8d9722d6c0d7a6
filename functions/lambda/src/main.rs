//! `embedfn`: text embeddings and reranking on ONNX Runtime behind Ollama-, OpenAI-, Jina- and
//! Cohere-compatible routes.
//!
//! State (ONNX Runtime, the models, the route table's [`App`]) is built once here, then one
//! adapter hands each request to the core's route table: inside AWS Lambda
//! (`AWS_LAMBDA_RUNTIME_API` set) the Lambda runtime ([`lambda`]), elsewhere the HTTP server on
//! `HOST:PORT` ([`server`]).

mod bridge;
mod config;
mod lambda;
mod models;
mod ort_backend;
mod runtime;
mod server;

use std::process::ExitCode;

use std::sync::Arc;

use embedfn_core::{App, Metrics, Registry};

use crate::config::Config;
use crate::models::Engine;
use crate::ort_backend::SessionOptions;

/// Builds the app from the configuration: loads ONNX Runtime and every configured model.
fn build(config: &Config) -> Result<App<Engine>, String> {
    let (lib, env) = runtime::init().map_err(|e| e.to_string())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let session = SessionOptions {
        intra_threads: config.intra_threads,
        cuda: config.cuda,
    };
    let metrics = Arc::new(Metrics::default());
    let embedder = config
        .embeddings_model
        .as_deref()
        .map(|id| models::embedder(id, config, &env, session, &metrics))
        .transpose()
        .map_err(|e| e.to_string())?;
    let reranker = config
        .reranker_model
        .as_deref()
        .map(|id| models::reranker(id, config, &env, session, &metrics))
        .transpose()
        .map_err(|e| e.to_string())?;
    if embedder.is_none() && reranker.is_none() {
        return Err(
            "both EMBEDDINGS_MODEL_ID and RERANKER_MODEL_ID are 'none': nothing to serve".into(),
        );
    }
    let mut app = App::new(Registry { embedder, reranker });
    app.limits = config.limits;
    app.metrics = metrics;
    app.api_key = config.api_key.clone();
    Ok(app)
}

/// Serves `app` with the adapter for where the process runs.
async fn run(config: Config, app: App<Engine>) -> Result<(), String> {
    if lambda::runtime_api().is_some() {
        return lambda::run(app).await;
    }
    let addr = format!("{}:{}", config.host, config.port);
    server::serve(app, &addr)
        .await
        .map_err(|e| format!("server on {addr}: {e}"))
}

/// Logs to stderr: JSON lines in Lambda (CloudWatch parses them), plain text elsewhere.
fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if lambda::runtime_api().is_some() {
        logs.json().with_ansi(false).init();
    } else {
        logs.init();
    }
}

/// Loads everything the process serves; in Lambda this is the init phase.
fn init() -> Result<(Config, App<Engine>), String> {
    let started = std::time::Instant::now();
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let app = build(&config)?;
    tracing::info!(ms = started.elapsed().as_millis(), "init done");
    Ok((config, app))
}

const USAGE: &str = "usage: embedfn [--init-only]

Serves embeddings and reranking (configured by environment variables: see the README).
  --init-only   load ONNX Runtime and the models (downloading them if needed), then exit:
                checks a configuration, and fills MODEL_CACHE_DIR when building an image
  --version     print the version";

fn main() -> ExitCode {
    let mut init_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--init-only" => init_only = true,
            "--version" => {
                println!("embedfn {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("embedfn: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    init_logging();
    let (config, app) = match init() {
        Ok(state) => state,
        Err(e) => {
            if let Some(api) = lambda::runtime_api() {
                lambda::report_init_error(&api, &e);
            }
            return fail(&e);
        }
    };
    if init_only {
        return ExitCode::SUCCESS;
    }
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(config, app)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &str) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("embedfn: {e}");
    ExitCode::FAILURE
}
