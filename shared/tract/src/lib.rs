//! # embedfn-tract
//!
//! The engine that runs a model inside a Wasm component: the pure-Rust ONNX runtime tract, with
//! embedfn's own rewrites where tract's import is slow or heavy for transformer encoders. Its one
//! public entry is [`TractBackend`], the core's [`Backend`](embedfn_core::Backend); it builds
//! natively (where `cargo test -p embedfn-tract` runs its tests) and for `wasm32-wasip2` (where
//! the Spin component links it and the test command runs the same tests under Wasmtime).
//!
//! ```text
//! model.onnx ──► reader (streamed decode) ──► quant::rewrite ──► layernorm::rewrite ──► tract
//!                                              │  int8 weight-only MatMul → I8MatMul (i8mm,
//!                                              │  i8kernel), vocabulary tables → I8Gather,
//!                                              │  bias Add and GELU → the matmul's epilogue (fuse)
//!                                              └─ LayerNormalization (+ residual Add) → LayerNorm
//! ```
//!
//! `EMBEDFN_PROFILE` (read live from the environment) logs time per op ([`profile`]).

mod fuse;
mod i8gather;
mod i8kernel;
mod i8mm;
mod layernorm;
mod profile;
mod quant;
mod reader;
mod tract;

pub use crate::tract::TractBackend;
