//! `embedfn-host`: runs embedfn's Wasm component locally and on edge nodes — Wasmtime with
//! `wasi:http` (a fresh pooled instance per request, as Spin does) and a `wasi:nn` backend on
//! ONNX Runtime whose graphs are loaded once and shared by every instance.
//!
//! ```text
//! --graph NAME=DIR ──► ort session (once) ──► wasi:nn registry ──┐
//!                  └─► /models/NAME (read-only) + env ───────────┼─► instance per request
//! component.wasm ──► (Wizer snapshot) ──► precompiled, cached ───┘
//! ```

mod cli;
mod compile;
mod graphs;
mod guest;
mod nn;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use embedfn_core::admission::Queue;
use embedfn_core::dynamic::BatchingOptions;
use embedfn_core::settings::SECRETS;
use embedfn_core::{BatchLimits, Place, Settings};
use embedfn_ort::{models, runtime, system};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cli::Command;
use crate::graphs::{dir_name, Graphs, ModelDir};
use crate::guest::Guest;
use crate::nn::{NnSettings, OrtNn};
use crate::serve::Server;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(why) if why.is_empty() => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("embedfn-host: {why}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("embedfn-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The model directories to serve: `--graph`, else the native server's model variables.
fn model_dirs(args: &cli::Args, settings: &Settings) -> anyhow::Result<Vec<ModelDir>> {
    if !args.graphs.is_empty() {
        return args
            .graphs
            .iter()
            .map(|(name, dir)| ModelDir::new(name.clone(), dir.clone()))
            .collect();
    }
    settings
        .embeddings_models
        .iter()
        .chain(&settings.reranker_models)
        .map(|id| {
            let dir = models::resolve(id, settings)?;
            let name = if PathBuf::from(id).is_dir() {
                dir_name(&dir)
            } else {
                id.rsplit('/').next().unwrap_or(id).to_string()
            };
            ModelDir::new(name, dir)
        })
        .collect()
}

async fn run(args: cli::Args) -> anyhow::Result<()> {
    let settings = Settings::from_lookup(|k| std::env::var(k).ok(), Place::Native)?;
    let models = model_dirs(&args, &settings)?;
    // The component reads the same settings as the native server: every one that applies to
    // it is forwarded from the host's environment (and `--env` adds or overrides).
    let mut env = Settings::for_component(|k| std::env::var(k).ok());
    // The model variables are the host's to set: they point at its mounts (`Guest::new`).
    env.retain(|(k, _)| k != "EMBEDDINGS_MODEL_ID" && k != "RERANKER_MODEL_ID");
    env.extend(args.env.iter().cloned());
    let wasm = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    match args.command {
        Command::Snapshot { out } => {
            // The snapshot's memory is shipped: no secret may reach its pre-initialisation.
            env.retain(|(k, _)| !SECRETS.contains(&k.as_str()));
            let engine = compile::engine(4096)?;
            let guest = Guest::new(models, env, Graphs::default(), None);
            let started = std::time::Instant::now();
            let snap = compile::snapshot(&engine, &guest, &wasm).await?;
            std::fs::write(&out, &snap).with_context(|| format!("writing {}", out.display()))?;
            tracing::info!(ms = started.elapsed().as_millis(), bytes = snap.len(), out = %out.display(), "snapshot written");
            Ok(())
        }
        Command::Serve {
            listen,
            snapshot,
            nn,
            max_memory_mb,
        } => {
            let engine = compile::engine(max_memory_mb)?;
            let ort = if nn {
                let (lib, ort_env) = runtime::init()?;
                tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
                let settings = NnSettings {
                    session: system::session_options(&settings),
                    quantization: settings.quantization,
                    batching: BatchingOptions {
                        enabled: settings.dynamic_batching,
                        limits: settings.batch(BatchLimits::default()),
                        wait: settings.batch_wait,
                    },
                };
                Some((Arc::new(ort_env), settings))
            } else {
                None
            };
            let graphs = match &ort {
                Some((ort_env, settings)) => {
                    graphs::preload(&models, &mut OrtNn::new(ort_env.clone(), *settings))?
                }
                None => Graphs::default(),
            };
            let guest = Guest::new(models, env, graphs, ort);
            let wasm = if snapshot {
                compile::snapshot(&engine, &guest, &wasm).await?
            } else {
                wasm
            };
            let component = compile::component(&engine, &wasm)?;
            let linker = guest::linker(&engine, nn)?;
            let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
            let addr = listen.unwrap_or_else(|| format!("{}:{}", settings.host, settings.port));
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            Arc::new(Server {
                pre,
                guest,
                queue: Queue::new(settings.admission),
                max_body: settings.limits.max_body_bytes,
                body_timeout: settings.body_timeout,
                request_timeout: settings.request_timeout,
            })
            .run(listener)
            .await
        }
    }
}
