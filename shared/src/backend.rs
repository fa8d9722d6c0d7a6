//! The one seam between the core and an inference engine: a small synchronous trait.
//!
//! A backend runs one padded [`Batch`] through one graph and returns output 0 as f32. Pooling,
//! windowing and ranking stay in the core, so every backend (`ort`, `wasi:nn`, `tract`) yields the
//! same answers for the same tensor.

use crate::batch::Batch;
use crate::error::Result;

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// Runs a model graph. Implementations feed the inputs their graph declares (`input_ids`,
/// `attention_mask`, `token_type_ids`, `task_id`) and return output 0:
/// `[batch, seq, hidden]` token embeddings, `[batch, hidden]` pooled embeddings, or
/// `[batch, labels]` / `[batch]` cross-encoder logits. Failures are [`crate::Error::Backend`].
pub trait Backend: Send + Sync {
    /// One forward pass.
    fn forward(&self, batch: &Batch) -> Result<Tensor>;
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        (**self).forward(batch)
    }
}

impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        (**self).forward(batch)
    }
}
