//! The core's [`Backend`] on ONNX Runtime.
//!
//! One session per model, built once at start-up and shared by all requests behind a mutex
//! (`Session::run` takes `&mut self`). The graph's declared inputs decide what is fed:
//! `input_ids`, `attention_mask`, `token_type_ids` (zeros or the pair's segments), `task_id`
//! (0-d scalar or `[1]`, read from the graph), `position_ids` (decoder exports). Output 0 — or
//! `sentence_embedding` for models whose Dense modules are in the graph — is returned as f32
//! (f16 is converted).
//!
//! Two start-up shortcuts: an attention-fused sibling of the file (`onnx/<stem>.fused.onnx`,
//! written by `scripts/fuse_attention.py`) is preferred when present, and ONNX Runtime's
//! optimized graph is kept in a cache ([`crate::ort_cache`]) so later starts skip optimization.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use embedfn_core::files::prefer_fused;
use embedfn_core::{Backend, Batch, Error, Feed, Result, Tensor, Values};
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::SessionInputValue;
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use crate::ort_cache::{self, Entry};
use embedfn_core::settings::Cuda;

/// Session settings shared by every model of the process.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Intra-op threads.
    pub intra_threads: usize,
    /// CUDA choice.
    pub cuda: Cuda,
    /// Intra-op threads spin between pieces of work (`ORT_SPINNING`).
    pub spinning: bool,
}

/// The element type of a graph input: integers for token inputs, floats for a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    I64,
    I32,
    F32,
    F16,
}

/// An ONNX Runtime session as a core backend.
pub struct OrtBackend {
    session: Mutex<Session>,
    feeds: Vec<(String, Feed, Elem)>,
    /// The output returned.
    output: String,
    output_f16: bool,
    /// Which execution provider the session runs on (for logs and `/health`).
    pub device: &'static str,
}

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Model(e.to_string())
}

/// The file a session for `path` opens: its attention-fused sibling when one lies beside it
/// (`scripts/optimize-model.sh`), unless `ONNX_FUSED_ATTENTION=false`. Graph facts (the memory
/// budget's attention kind) must be read from this file, not the configured one.
pub fn session_file(path: &Path) -> PathBuf {
    let use_fused = !matches!(
        std::env::var("ONNX_FUSED_ATTENTION").as_deref(),
        Ok("false" | "0" | "off")
    );
    if use_fused {
        prefer_fused(path)
    } else {
        path.to_path_buf()
    }
}

/// Opens an ONNX file (its external data next to it is found by ORT) with the process's
/// settings: CUDA when asked or found, else CPU with a log line. Returns the session and the
/// device it runs on. Every native engine (this backend, embedfn-host's `wasi:nn`) opens its
/// sessions here.
pub fn open_session(
    env: &Environment,
    path: &Path,
    options: SessionOptions,
) -> Result<(Session, &'static str)> {
    let fused = session_file(path);
    if fused != path {
        tracing::info!(file = %fused.display(), "using the attention-fused model beside the configured file");
    }
    let path = fused.as_path();
    let cpu = || session(env, path, options, false);
    let (session, device) = match options.cuda {
        Cuda::Off => (cpu(), "cpu"),
        Cuda::On | Cuda::Auto => match session(env, path, options, true) {
            Ok(s) => (Ok(s), "cuda"),
            Err(e) => {
                let msg = format!("CUDA execution provider unavailable ({e}); running on CPU");
                if options.cuda == Cuda::On {
                    tracing::warn!("{msg}");
                } else {
                    tracing::info!("{msg}");
                }
                (cpu(), "cpu")
            }
        },
    };
    let session = session.map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    Ok((session, device))
}

impl OrtBackend {
    /// Builds a session from an ONNX file (see [`open_session`]).
    /// The graph's output named `output` is returned (the sentence-transformers pipeline's
    /// `sentence_embedding`), else its first.
    pub fn load(
        env: &Environment,
        path: &Path,
        options: SessionOptions,
        output: Option<&str>,
    ) -> Result<Self> {
        let (session, device) = open_session(env, path, options)?;
        let feeds = session
            .inputs()
            .iter()
            .map(|input| feed_for(input.name(), input.dtype()))
            .collect::<Result<Vec<_>>>()?;
        let outputs = session.outputs();
        let chosen = match output {
            Some(name) => outputs.iter().find(|o| o.name() == name).ok_or_else(|| {
                model_err(format!(
                    "{}: the graph has no output '{name}'",
                    path.display()
                ))
            })?,
            None => outputs
                .first()
                .ok_or_else(|| model_err(format!("{}: graph has no outputs", path.display())))?,
        };
        let output_f16 = chosen.dtype().tensor_type() == Some(TensorElementType::Float16);
        let output = chosen.name().to_string();
        Ok(Self {
            session: Mutex::new(session),
            feeds,
            output,
            output_f16,
            device,
        })
    }
}

/// A session builder with the process's settings at `level`; `cuda` registers the CUDA
/// execution provider and fails when it cannot be used (the caller falls back to CPU).
fn builder(
    env: &Environment,
    o: SessionOptions,
    cuda: bool,
    level: GraphOptimizationLevel,
) -> std::result::Result<SessionBuilder, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut builder = Session::builder(env)
        .map_err(|e| s(&e))?
        .with_optimization_level(level)
        .map_err(|e| s(&e))?
        .with_intra_threads(o.intra_threads)
        .map_err(|e| s(&e))?
        .with_intra_op_spinning(o.spinning)
        .map_err(|e| s(&e))?
        .with_inter_threads(1)
        .map_err(|e| s(&e))?
        // No memory patterns (a cached plan per input shape, kept for the session's life).
        .with_memory_pattern(false)
        .map_err(|e| s(&e))?;
    // The CPU arena reuses a pass's freed tensors for its later layers; without it every tensor
    // over the mmap threshold is mapped and faulted in afresh (measured on a 0.6B int8 decoder
    // at 2048 tokens: 11.6 s without, 5.0 s with). A large CPU pass ends by shrinking the arena
    // (`memory.enable_memory_arena_shrinkage`, see `forward`), so its memory goes back to the
    // system and the memory budget holds.
    let cpu = ort::ep::CPU::default().with_arena_allocator(true).build();
    builder = if cuda {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        builder.with_execution_providers([cuda, cpu])
    } else {
        builder.with_execution_providers([cpu])
    }
    .map_err(|e| s(&e))?;
    Ok(builder)
}

/// One session: from the optimized-model cache when it holds this file, else optimized from
/// the file itself (writing the optimized graph into the cache on the way).
fn session(
    env: &Environment,
    path: &Path,
    o: SessionOptions,
    cuda: bool,
) -> std::result::Result<Session, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let entry = Entry::new(path, if cuda { "cuda" } else { "cpu" }, "all");
    if let Some(cached) = entry.as_ref().and_then(Entry::ready) {
        let started = std::time::Instant::now();
        match builder(env, o, cuda, GraphOptimizationLevel::Disable)?.commit_from_file(&cached) {
            Ok(session) => {
                tracing::info!(model = %path.display(), cached = %cached.display(),
                    ms = started.elapsed().as_millis(),
                    "loaded ONNX Runtime's optimized model from the cache (graph optimization skipped)");
                return Ok(session);
            }
            Err(e) => {
                tracing::warn!(cached = %cached.display(), "cached optimized model unusable ({e}); optimizing again")
            }
        }
    }
    let mut b = builder(env, o, cuda, GraphOptimizationLevel::Level3)?;
    let pending = entry.as_ref().and_then(Entry::begin);
    if let Some(p) = &pending {
        b = b
            .with_optimized_model_path(p.model())
            .map_err(|e| s(&e))?
            .with_config_entry(
                "session.optimized_model_external_initializers_file_name",
                ort_cache::DATA,
            )
            .map_err(|e| s(&e))?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                "1024",
            )
            .map_err(|e| s(&e))?;
    }
    match b.commit_from_file(path) {
        Ok(session) => {
            if let Some(p) = pending {
                p.finish();
            }
            Ok(session)
        }
        Err(e) => {
            if let Some(p) = pending {
                p.abandon();
            }
            Err(s(&e))
        }
    }
}

fn feed_for(name: &str, dtype: &ValueType) -> Result<(String, Feed, Elem)> {
    let dims: Vec<Option<usize>> = dtype.tensor_shape().map_or_else(Vec::new, |s| {
        s.iter().map(|&d| usize::try_from(d).ok()).collect()
    });
    let feed = Feed::for_input(name, &dims)?;
    let elem = match (dtype.tensor_type(), feed.is_float()) {
        (Some(TensorElementType::Int64), false) => Elem::I64,
        (Some(TensorElementType::Int32), false) => Elem::I32,
        (Some(TensorElementType::Float32), true) => Elem::F32,
        (Some(TensorElementType::Float16), true) => Elem::F16,
        (other, float) => {
            let expected = if float {
                "float32 or float16"
            } else {
                "int64 or int32"
            };
            return Err(model_err(format!(
                "input '{name}' has type {other:?}; expected {expected}"
            )));
        }
    };
    Ok((name.to_string(), feed, elem))
}

fn run_err(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// The options of one pass on `device`: a CPU pass marked `release` ends by shrinking the arena,
/// so its memory goes back to the system; other passes leave it for the next. On CUDA the
/// passes' memory is the GPU's, and the host arena holds little more than outputs.
pub fn run_options(release: bool, device: &str) -> Result<RunOptions> {
    let mut options = RunOptions::new().map_err(run_err)?;
    if release && device == "cpu" {
        options
            .set("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(run_err)?;
    }
    Ok(options)
}

/// An input tensor: int64 data is borrowed as is; int32 graphs get a narrowed copy; a float
/// input is the empty KV cache its shape (with a 0) describes.
fn tensor(data: &[i64], shape: Vec<usize>, elem: Elem) -> Result<SessionInputValue<'_>> {
    Ok(match elem {
        Elem::I64 => TensorRef::from_array_view((shape, data))
            .map_err(run_err)?
            .into(),
        Elem::I32 => {
            let narrow: Vec<i32> = data.iter().map(|&v| v as i32).collect();
            ort::value::Tensor::from_array((shape, narrow))
                .map_err(run_err)?
                .into()
        }
        Elem::F32 => ort::value::Tensor::from_array((shape, Vec::<f32>::new()))
            .map_err(run_err)?
            .into(),
        Elem::F16 => ort::value::Tensor::from_array((shape, Vec::<half::f16>::new()))
            .map_err(run_err)?
            .into(),
    })
}

impl Backend for OrtBackend {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let mut inputs: Vec<(&str, SessionInputValue)> = Vec::with_capacity(self.feeds.len());
        for (name, feed, elem) in &self.feeds {
            let (data, shape) = batch.feed(*feed)?;
            inputs.push((name.as_str(), tensor(data, shape, *elem)?));
        }
        let options = run_options(batch.release, self.device)?;
        let value = {
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let mut outputs = session
                .run_with_options(inputs, &options)
                .map_err(run_err)?;
            outputs.remove(self.output.as_str())
        }
        .ok_or_else(|| run_err("the model has no output"))?;
        let (shape, data) = if self.output_f16 {
            let (shape, data) = value.try_extract_tensor::<half::f16>().map_err(run_err)?;
            (shape.clone(), data.iter().map(|x| x.to_f32()).collect())
        } else {
            // Read in place: ONNX Runtime's output buffer is the pass's largest.
            let (shape, _) = value.try_extract_tensor::<f32>().map_err(run_err)?;
            (shape.clone(), Values::held(F32Output(value)))
        };
        Ok(Tensor {
            shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
            data,
        })
    }
}

/// An f32 output value, read where ONNX Runtime put it (checked to be f32 when made).
struct F32Output(DynValue);

impl AsRef<[f32]> for F32Output {
    fn as_ref(&self) -> &[f32] {
        self.0
            .try_extract_tensor::<f32>()
            .map_or(&[], |(_, data)| data)
    }
}
