//! # embedfn-core
//!
//! The part of embedfn that every runtime shares: tokenization, pooling, rerank scoring, the API
//! schemas and the one route table. It does no I/O and links no inference engine, so it builds
//! for `wasm32-wasip2` as well as natively; an adapter supplies a [`Backend`] (ONNX Runtime,
//! `wasi:nn`, `tract`) and bytes in, and gets a [`Reply`] out:
//!
//! ```text
//! model dir files ──► ModelSpec + TextTokenizer ──┐
//!                                                 ├─► Embedder / Reranker ─► Registry ─► App
//! adapter's engine ──► impl Backend ──────────────┘
//! HTTP request ──► router::route(&App, Request) ──► Reply
//! ```
//!
//! With the `fs` feature, [`files::read_model_dir`] reads a model directory from disk; with
//! `batching`, [`dynamic::Batcher`] batches concurrent requests on a worker thread.

#[cfg(feature = "admission")]
pub mod admission;
pub mod api;
pub mod app;
pub mod backend;
pub mod batch;
pub mod cors;
pub mod deadline;
#[cfg(feature = "batching")]
pub mod dynamic;
pub mod embed;
pub mod error;
pub mod family;
#[cfg(feature = "fs")]
pub mod files;
pub mod memory;
pub mod metrics;
pub mod onnx_graph;
pub mod openapi;
pub mod output;
pub mod pooling;
pub mod registry;
pub mod rerank;
pub mod router;
pub mod routes;
pub mod sentence;
pub mod settings;
pub mod spec;
pub mod time;
pub mod tokenize;

pub use app::{ApiKey, App, Limits};
pub use backend::{Backend, Tensor, Values};
pub use batch::{Batch, BatchLimits, Feed};
pub use embed::{EmbedParams, Embedder, EmbedderOptions, Input};
pub use error::{Error, Result};
pub use memory::Budget;
pub use metrics::Metrics;
pub use onnx_graph::WeightStats;
pub use registry::{ModelInfo, Registry, Served};
pub use rerank::{RerankOptions, Reranker};
pub use router::{route, Reply, Request};
pub use settings::{Place, Settings};
pub use spec::{GraphFacts, ModelFiles, ModelKind, ModelSpec, Quantization};
pub use tokenize::{Padding, TextTokenizer};
