//! The one seam between the core and an inference engine: a small synchronous trait.
//!
//! A backend runs one padded [`Batch`] through one graph and returns output 0 as f32. Pooling,
//! windowing and ranking stay in the core, so every backend (`ort`, `wasi:nn`, `tract`) yields the
//! same answers for the same tensor.

use crate::batch::Batch;
use crate::error::{Error, Result};

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Values,
}

/// A tensor's values: a `Vec`, or a buffer the engine keeps (e.g. ONNX Runtime's own output),
/// read in place. A `[batch, seq, hidden]` output is the largest buffer of a pass (64 MiB for
/// 32 × 512 tokens × 1024); holding the engine's buffer saves copying it into fresh pages.
pub struct Values(Repr);

enum Repr {
    Owned(Vec<f32>),
    Held(Box<dyn AsRef<[f32]> + Send + Sync>),
}

impl Values {
    /// Values read in place from `buffer` for as long as this lives.
    pub fn held(buffer: impl AsRef<[f32]> + Send + Sync + 'static) -> Self {
        Self(Repr::Held(Box::new(buffer)))
    }
}

impl std::ops::Deref for Values {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Held(b) => (**b).as_ref(),
        }
    }
}

impl Default for Values {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Self {
        Self(Repr::Owned(v))
    }
}

impl FromIterator<f32> for Values {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl Clone for Values {
    fn clone(&self) -> Self {
        self.to_vec().into()
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<f32>> for Values {
    fn eq(&self, other: &Vec<f32>) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
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

impl Tensor {
    /// Splits the output of a [`Batch::concat`] back into one tensor per part: rows in order,
    /// and for token-level `[batch, seq, hidden]` outputs each part's own padded length.
    pub fn split(&self, parts: &[&Batch]) -> Result<Vec<Tensor>> {
        let rows: usize = parts.iter().map(|b| b.batch).sum();
        let Some((&total, rest)) = self.shape.split_first() else {
            return Err(Error::Backend("scalar model output".into()));
        };
        if total != rows {
            return Err(Error::Backend(format!(
                "model output has {total} rows for a batch of {rows}"
            )));
        }
        let row_len: usize = rest.iter().product();
        if self.data.len() != total * row_len {
            return Err(Error::Backend(format!(
                "model output has {} values for shape {:?}",
                self.data.len(),
                self.shape
            )));
        }
        let mut out = Vec::with_capacity(parts.len());
        let mut start = 0;
        for b in parts {
            let rows = &self.data[start * row_len..(start + b.batch) * row_len];
            start += b.batch;
            let t = match rest {
                // Token-level output: keep the part's own `seq` positions of every row (the
                // last ones when rows are padded on the left).
                [seq, hidden] if *seq >= b.seq => {
                    let cols = b.padding.span(b.seq, *seq);
                    Tensor {
                        shape: vec![b.batch, b.seq, *hidden],
                        data: rows
                            .chunks(row_len)
                            .flat_map(|row| &row[cols.start * hidden..cols.end * hidden])
                            .copied()
                            .collect(),
                    }
                }
                _ => Tensor {
                    shape: [&[b.batch][..], rest].concat(),
                    data: rows.to_vec().into(),
                },
            };
            out.push(t);
        }
        Ok(out)
    }
}
