//! `embedfn`: text embeddings and reranking on ONNX Runtime behind Ollama-, OpenAI-, Jina- and
//! Cohere-compatible routes.
//!
//! State (ONNX Runtime, the models, the route table's [`App`]) is built once here, then one
//! adapter hands each request to the core's route table: inside AWS Lambda
//! (`AWS_LAMBDA_RUNTIME_API` set) the Lambda runtime ([`lambda`]), elsewhere the HTTP server on
//! `HOST:PORT` ([`server`]). Both turn their request into the core's and its reply back in
//! [`bridge`].

mod bridge;
mod lambda;
mod server;

use std::process::ExitCode;

use embedfn_core::{App, Place, Settings};
use embedfn_ort::build;
use embedfn_ort::models::Engine;

/// Serves `app` with the adapter for where the process runs.
async fn run(settings: Settings, app: App<Engine>) -> Result<(), String> {
    if lambda::runtime_api().is_some() {
        return lambda::run(app).await;
    }
    let addr = format!("{}:{}", settings.host, settings.port);
    server::serve(app, &addr, &settings).await
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
fn init() -> Result<(Settings, App<Engine>), String> {
    let started = std::time::Instant::now();
    let settings = Settings::from_lookup(|k| std::env::var(k).ok(), Place::Native)
        .map_err(|e| e.to_string())?;
    let app = build(&settings)?;
    if settings.snap_start {
        // SnapStart snapshots the environment when this init ends (at the runtime's
        // `restore/next`): whatever the first passes allocate or compile belongs in it.
        let warmed = std::time::Instant::now();
        let texts = app.models.warm_up().map_err(|e| format!("warm-up: {e}"))?;
        tracing::info!(
            texts,
            ms = warmed.elapsed().as_millis(),
            "models warmed for the snapshot"
        );
    }
    tracing::info!(ms = started.elapsed().as_millis(), "init done");
    Ok((settings, app))
}

const USAGE: &str = "usage: embedfn [--init-only]

Serves embeddings and reranking (configured by environment variables: see docs/configuration.md).
  --init-only   load ONNX Runtime and the models (downloading them if needed), then exit:
                checks a configuration, and fills MODEL_CACHE_DIR when building an image
  --version     print the version";

/// Makes big allocations (ONNX Runtime's tensors of long inputs: the CPU arena is off) come
/// from `mmap` and go back to the system when freed, so a pass's memory is really returned and
/// the memory budget holds. glibc's default raises its mmap threshold after the first big free
/// (up to 32 MiB) and then keeps freed tensors in per-thread heaps, where they add up across
/// threads and passes (measured: the peak RSS crept 30 MiB past a 640 MiB budget without
/// this). 4 MiB keeps the small tensors of short batches on the heap (mapping each one costs
/// page faults on every pass). At most two malloc arenas: every other thread's arena keeps its
/// own freed chunks, which the estimate does not count (measured: 175 MiB idle after a flood of
/// requests with the default eight per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

fn main() -> ExitCode {
    return_freed_memory();
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
    let (settings, app) = match init() {
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
        .and_then(|rt| {
            let served = rt.block_on(run(settings, app));
            // Work still running after the grace period is not waited for.
            rt.shutdown_timeout(std::time::Duration::ZERO);
            served
        });
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
