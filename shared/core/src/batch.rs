//! Batching inside a request: sort by length, group under a token budget, pad each group to its
//! own longest sequence. Results are scattered back into input order by the callers.

use crate::error::{Error, Result};
use crate::spec::GraphFacts;
use crate::tokenize::{Padding, Tokens};

/// A padded batch, row-major `[batch, seq]`, ready for a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Token ids, padded with the tokenizer's pad id.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids (0 for padding).
    pub token_type_ids: Vec<i64>,
    /// Each token's position in its sequence, counted over real tokens (decoder graphs take
    /// `position_ids`; padding gets 0).
    pub position_ids: Vec<i64>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
    /// The task adapter for the whole batch (Jina v3 `task_id`), when the model has tasks.
    pub task_id: Option<i64>,
    /// How rows are padded: the id (graphs such as XLM-R derive position ids from it) and the
    /// side.
    pub padding: Padding,
    /// Give the pass's working memory back to the system when it ends. The batcher sets it for
    /// passes the memory model puts over [`crate::memory::RELEASE_BYTES`]; an engine that pools
    /// memory across passes (ONNX Runtime's arena) keeps smaller passes' memory for the next.
    pub release: bool,
}

impl Batch {
    /// Pads `seqs` to their longest length.
    pub fn pad(seqs: &[&Tokens], padding: Padding, task_id: Option<i64>) -> Self {
        let seq = seqs.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut b = Batch {
            input_ids: Vec::with_capacity(seqs.len() * seq),
            attention_mask: Vec::with_capacity(seqs.len() * seq),
            token_type_ids: Vec::with_capacity(seqs.len() * seq),
            position_ids: Vec::with_capacity(seqs.len() * seq),
            batch: seqs.len(),
            seq,
            task_id,
            padding,
            release: false,
        };
        for t in seqs {
            padding.row(&mut b.input_ids, t.ids.iter().copied(), seq, padding.id);
            padding.row(
                &mut b.attention_mask,
                std::iter::repeat_n(1, t.len()),
                seq,
                0,
            );
            padding.row(&mut b.token_type_ids, t.type_ids.iter().copied(), seq, 0);
            padding.row(&mut b.position_ids, (0..t.len()).map(|i| i as i64), seq, 0);
        }
        b
    }

    /// The position ids of a `[rows, seq]` attention mask: the count of real tokens before
    /// each, whichever side the padding is on (0 for padding).
    pub fn positions_of(mask: &[i64], seq: usize) -> Vec<i64> {
        mask.chunks(seq.max(1))
            .flat_map(|row| {
                let mut at = 0i64;
                row.iter().map(move |&m| {
                    let p = if m != 0 { at } else { 0 };
                    at += i64::from(m != 0);
                    p
                })
            })
            .collect()
    }

    /// The attention mask of row `i`.
    pub fn mask(&self, i: usize) -> &[i64] {
        &self.attention_mask[i * self.seq..(i + 1) * self.seq]
    }

    /// The batch as a text model's graph inputs, named as ONNX exports name them, with their
    /// shapes: `input_ids`, `attention_mask`, `token_type_ids`, `position_ids` (`[batch, seq]`),
    /// and `task_id`
    /// (`[1]`) when the batch has one. Engines that feed by name (`wasi:nn`) send these.
    pub fn named_inputs(&self) -> Vec<(&'static str, &[i64], Vec<usize>)> {
        let dims = vec![self.batch, self.seq];
        let mut inputs = vec![
            ("input_ids", self.input_ids.as_slice(), dims.clone()),
            (
                "attention_mask",
                self.attention_mask.as_slice(),
                dims.clone(),
            ),
            (
                "token_type_ids",
                self.token_type_ids.as_slice(),
                dims.clone(),
            ),
            ("position_ids", self.position_ids.as_slice(), dims),
        ];
        if let Some(task) = &self.task_id {
            inputs.push(("task_id", std::slice::from_ref(task), vec![1]));
        }
        inputs
    }

    /// The data and shape `feed` takes from this batch (no data for [`Feed::EmptyPast`]: its
    /// shape has a 0).
    pub fn feed(&self, feed: Feed) -> Result<(&[i64], Vec<usize>)> {
        let dims = vec![self.batch, self.seq];
        Ok(match feed {
            Feed::InputIds => (&self.input_ids, dims),
            Feed::AttentionMask => (&self.attention_mask, dims),
            Feed::TokenTypeIds => (&self.token_type_ids, dims),
            Feed::PositionIds => (&self.position_ids, dims),
            Feed::TaskId(rank) => {
                let task = self.task_id.as_ref().ok_or_else(|| {
                    Error::Backend(
                        "the graph takes task_id but config.json lists no lora_adaptations".into(),
                    )
                })?;
                (std::slice::from_ref(task), vec![1; rank])
            }
            Feed::EmptyPast { heads, head_dim } => (&[], vec![self.batch, heads, 0, head_dim]),
        })
    }

    /// Real (unpadded) tokens in the batch.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// Whether `other` can share a forward pass with this batch (same task and padding).
    pub fn compatible(&self, other: &Batch) -> bool {
        self.task_id == other.task_id && self.padding == other.padding
    }

    /// The columns of row `i` that hold its real tokens, when it has `len` of them.
    pub fn span(&self, len: usize) -> std::ops::Range<usize> {
        self.padding.span(len, self.seq)
    }

    /// Stacks compatible batches (see [`Batch::compatible`]) into one, re-padded to the longest
    /// row; [`Tensor::split`](crate::backend::Tensor::split) undoes it on the output.
    pub fn concat(parts: &[&Batch]) -> Batch {
        let first = parts.first().copied().cloned().unwrap_or_default();
        let seq = parts.iter().map(|b| b.seq).max().unwrap_or(0);
        let rows: usize = parts.iter().map(|b| b.batch).sum();
        let mut out = Batch {
            input_ids: Vec::with_capacity(rows * seq),
            attention_mask: Vec::with_capacity(rows * seq),
            token_type_ids: Vec::with_capacity(rows * seq),
            position_ids: Vec::with_capacity(rows * seq),
            batch: rows,
            seq,
            task_id: first.task_id,
            padding: first.padding,
            release: parts.iter().any(|b| b.release),
        };
        let p = first.padding;
        for b in parts {
            for r in 0..b.batch {
                // The row without its padding, padded again to the new length.
                let real = r * b.seq..(r + 1) * b.seq;
                let len = b.attention_mask[real.clone()]
                    .iter()
                    .filter(|&&m| m != 0)
                    .count();
                let span = b.span(len);
                let cols = real.start + span.start..real.start + span.end;
                let ids = b.input_ids[cols.clone()].iter().copied();
                let mask = b.attention_mask[cols.clone()].iter().copied();
                let types = b.token_type_ids[cols.clone()].iter().copied();
                let positions = b.position_ids[cols].iter().copied();
                p.row(&mut out.input_ids, ids, seq, p.id);
                p.row(&mut out.attention_mask, mask, seq, 0);
                p.row(&mut out.token_type_ids, types, seq, 0);
                p.row(&mut out.position_ids, positions, seq, 0);
            }
        }
        out
    }
}

/// What one graph input of a text model is fed with, by the names ONNX exports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `input_ids`
    InputIds,
    /// `attention_mask`
    AttentionMask,
    /// `token_type_ids`
    TokenTypeIds,
    /// `position_ids` (decoder exports: Qwen3, Gemma)
    PositionIds,
    /// `task_id`, with the rank the graph declares for it (0 or 1).
    TaskId(usize),
    /// `past_key_values.<layer>.key` / `.value` of Optimum's with-past decoder exports
    /// (`[batch, heads, past, head_dim]`, float): an empty cache (`past` = 0), so the pass
    /// computes every position itself. Their `present.*` outputs are not read.
    EmptyPast {
        /// The graph's declared KV heads.
        heads: usize,
        /// The graph's declared head width.
        head_dim: usize,
    },
}

/// The prefix of a with-past export's cache inputs.
pub const PAST_PREFIX: &str = "past_key_values.";

impl Feed {
    /// The graph input's name (for [`Feed::EmptyPast`], the prefix its inputs share).
    pub const fn name(self) -> &'static str {
        match self {
            Feed::InputIds => "input_ids",
            Feed::AttentionMask => "attention_mask",
            Feed::TokenTypeIds => "token_type_ids",
            Feed::PositionIds => "position_ids",
            Feed::TaskId(_) => "task_id",
            Feed::EmptyPast { .. } => PAST_PREFIX,
        }
    }

    /// The feed of the graph input `name` declared with `dims` (`None`: a symbolic dimension).
    pub fn for_input(name: &str, dims: &[Option<usize>]) -> Result<Feed> {
        if name.starts_with(PAST_PREFIX) {
            return match dims {
                [_, Some(heads), _, Some(head_dim)] => Ok(Feed::EmptyPast {
                    heads: *heads,
                    head_dim: *head_dim,
                }),
                _ => Err(Error::Model(format!(
                    "graph input '{name}' is a KV cache of shape {dims:?}; embedfn feeds an empty \
                     one and needs its heads and head width as fixed dimensions \
                     ([batch, heads, past, head_dim])"
                ))),
            };
        }
        [
            Feed::InputIds,
            Feed::AttentionMask,
            Feed::TokenTypeIds,
            Feed::PositionIds,
            Feed::TaskId(dims.len()),
        ]
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| Error::Model(format!("graph input '{name}' is not one embedfn can feed")))
    }

    /// Whether the input is fed with floats (the KV cache) rather than integers.
    pub const fn is_float(self) -> bool {
        matches!(self, Feed::EmptyPast { .. })
    }
}

/// Limits on one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Padded tokens (`batch × seq`) per forward pass; a single longer sequence still runs alone.
    pub max_tokens: usize,
    /// Sequences per forward pass.
    pub max_size: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_tokens: 16_384,
            // On small CPUs (Lambda, 2-core containers) padding and attention cost grow faster
            // than batching saves: 32 short MiniLM texts ran 18 % faster as two sorted passes of
            // 16 than as one of 32 (the same as 8; 4 and below lose).
            max_size: 16,
        }
    }
}

impl BatchLimits {
    /// Sequences per pass on an accelerator. On an H200 (jina-v3-scale, fp16, 64 texts of 128
    /// tokens) one pass of 64 took 94 ms where four of 16 took 138 ms; the CPU default's reason
    /// (padding and attention outgrow what batching saves) does not hold there.
    pub const ACCELERATOR_MAX_SIZE: usize = 64;

    /// Sequences per pass where one thread runs the model (the tract build inside the Wasm
    /// component): there is no parallelism for a bigger pass to feed, only padding. MiniLM
    /// int8 under `wasmtime serve`, 32 short texts: passes of 16 took ≈ 800 ms, of 2–8
    /// ≈ 680–740 ms, of 1 ≈ 800 ms (each pass's fixed cost).
    pub const ONE_THREAD_MAX_SIZE: usize = 4;

    /// The limits for a model that runs on one thread, when the size was not set.
    pub fn on_one_thread(self) -> Self {
        Self {
            max_size: self.max_size.min(Self::ONE_THREAD_MAX_SIZE),
            ..self
        }
    }

    /// The limits for a model that runs on an accelerator (CUDA), when the size was not set.
    pub fn on_accelerator(self) -> Self {
        Self {
            max_size: self.max_size.max(Self::ACCELERATOR_MAX_SIZE),
            ..self
        }
    }

    /// The limits for a graph: one sequence per pass when its results depend on what shares
    /// the pass (see [`GraphFacts::batch_invariant`]).
    pub fn for_graph(self, facts: &GraphFacts) -> Self {
        if facts.batch_invariant {
            self
        } else {
            Self {
                max_size: 1,
                ..self
            }
        }
    }
}

/// Default cap on the tokens one request may run (`MAX_REQUEST_TOKENS`): 32 full 8192-token
/// contexts.
pub const MAX_REQUEST_TOKENS: usize = 262_144;

/// A request's tokens, counted as its sequences are made: the request stops (413, like its
/// body) as soon as they pass `MAX_REQUEST_TOKENS`, before the rest of it is tokenized.
#[derive(Debug, Clone, Copy)]
pub struct RequestTokens {
    total: usize,
    max: usize,
}

impl RequestTokens {
    /// A count that may reach `max`.
    pub fn new(max: usize) -> Self {
        Self { total: 0, max }
    }

    /// Adds a sequence's tokens; refuses the request once the total passes the cap.
    pub fn add(&mut self, tokens: usize) -> Result<()> {
        self.total = self.total.saturating_add(tokens);
        if self.total > self.max {
            return Err(self.refused());
        }
        Ok(())
    }

    /// The 413 for a request found to hold more tokens than the rest of its allowance (a text
    /// that was not tokenized to its end).
    pub fn exceeded(&mut self) -> Error {
        self.total = self.total.max(self.max.saturating_add(1));
        self.refused()
    }

    fn refused(&self) -> Error {
        Error::PayloadTooLarge(format!(
            "the request has more than {} tokens (at least {}): the limit is {} per request \
             (MAX_REQUEST_TOKENS)",
            self.max, self.total, self.max
        ))
    }

    /// Tokens the request may still add.
    pub fn remaining(&self) -> usize {
        self.max - self.total
    }

    /// Tokens counted so far.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// Groups sequence indices into forward passes: longest first, so each group's padding is
/// bounded by its first member, and no group exceeds the limits (but each holds at least one).
pub fn plan(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    plan_within(lengths, limits, |_, _| true)
}

/// [`plan`] where a pass of `batch` sequences padded to `seq` must also satisfy `fits` (the
/// memory budget, [`crate::memory::Fit::fits`]); a sequence that fails it alone still runs
/// alone (callers cut or refuse those first).
pub fn plan_within(
    lengths: &[usize],
    limits: BatchLimits,
    fits: impl Fn(usize, usize) -> bool,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g)
                if g.len() < limits.max_size
                    && (g.len() + 1) * lengths[g[0]].max(1) <= limits.max_tokens
                    && fits(g.len() + 1, lengths[g[0]]) =>
            {
                g.push(i)
            }
            _ => groups.push(vec![i]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Tensor;

    #[test]
    fn pads_to_longest() {
        let a = Tokens {
            ids: vec![5, 6, 7],
            type_ids: vec![0, 0, 0],
        };
        let b = Tokens {
            ids: vec![8],
            type_ids: vec![0],
        };
        let right = Padding { id: 1, left: false };
        let batch = Batch::pad(&[&a, &b], right, Some(3));
        assert_eq!(batch.input_ids, vec![5, 6, 7, 8, 1, 1]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.position_ids, vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(batch.mask(1), &[1, 0, 0]);
        assert_eq!((batch.batch, batch.seq, batch.task_id), (2, 3, Some(3)));
        assert_eq!(batch.span(1), 0..1);
    }

    #[test]
    fn a_with_past_export_gets_an_empty_cache_of_its_declared_heads() {
        let past =
            Feed::for_input("past_key_values.3.key", &[None, Some(8), None, Some(128)]).unwrap();
        assert_eq!(
            past,
            Feed::EmptyPast {
                heads: 8,
                head_dim: 128
            }
        );
        let batch = Batch {
            batch: 2,
            seq: 5,
            ..Batch::default()
        };
        let (data, shape) = batch.feed(past).unwrap();
        assert!(data.is_empty());
        assert_eq!(shape, vec![2, 8, 0, 128]);
        // Heads the graph leaves symbolic cannot be fed: refused, naming the input.
        let err = Feed::for_input("past_key_values.0.value", &[None, None, None, None]);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("past_key_values.0.value"));
        assert_eq!(Feed::for_input("task_id", &[]).unwrap(), Feed::TaskId(0));
        assert!(Feed::for_input("pixel_values", &[None; 4]).is_err());
    }

    #[test]
    fn pads_on_the_left_when_the_model_does() {
        let t = |ids: &[i64]| Tokens {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
        };
        let left = Padding { id: 1, left: true };
        let (a, b, c) = (t(&[5, 6, 7]), t(&[8]), t(&[9, 9, 9, 9]));
        let batch = Batch::pad(&[&a, &b], left, None);
        assert_eq!(batch.input_ids, vec![5, 6, 7, 1, 1, 8]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 0, 1]);
        // Positions count real tokens, as the mask-derived ones of the host do.
        assert_eq!(batch.position_ids, vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(
            batch.position_ids,
            Batch::positions_of(&batch.attention_mask, 3)
        );
        assert_eq!(batch.span(1), 2..3);
        // Stacked with a longer pass, every row is padded again on the left, and the split
        // gives each part its own (last) columns back.
        let longer = Batch::pad(&[&c], left, None);
        let both = Batch::concat(&[&batch, &longer]);
        assert_eq!(both.input_ids, vec![1, 5, 6, 7, 1, 1, 1, 8, 9, 9, 9, 9]);
        assert_eq!(both.position_ids, vec![0, 0, 1, 2, 0, 0, 0, 0, 0, 1, 2, 3]);
        let out = Tensor {
            shape: vec![3, 4, 1],
            data: (0..12).map(|v| v as f32).collect(),
        };
        let parts = out.split(&[&batch, &longer]).unwrap();
        assert_eq!(parts[0].data, vec![1., 2., 3., 5., 6., 7.]);
        assert_eq!(parts[1].data, vec![8., 9., 10., 11.]);
    }

    #[test]
    fn concat_then_split_gives_each_part_its_own_rows() {
        let t = |ids: &[i64]| Tokens {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
        };
        let (a, b, c) = (t(&[5, 6, 7]), t(&[8]), t(&[9, 9]));
        let right = Padding { id: 1, left: false };
        let first = Batch::pad(&[&a, &b], right, None);
        let second = Batch::pad(&[&c], right, None);
        let both = Batch::concat(&[&first, &second]);
        assert_eq!(both.input_ids, vec![5, 6, 7, 8, 1, 1, 9, 9, 1]);
        assert_eq!(both.attention_mask, vec![1, 1, 1, 1, 0, 0, 1, 1, 0]);
        assert_eq!((both.batch, both.seq, both.real_tokens()), (3, 3, 6));
        // Token-level output [3, 3, 1]: value = 10 * row + position.
        let out = Tensor {
            shape: vec![3, 3, 1],
            data: vec![0., 1., 2., 10., 11., 12., 20., 21., 22.].into(),
        };
        let parts = out.split(&[&first, &second]).unwrap();
        assert_eq!(parts[0].shape, vec![2, 3, 1]);
        assert_eq!(parts[1].shape, vec![1, 2, 1]);
        assert_eq!(parts[1].data, vec![20., 21.]);
        let pooled = Tensor {
            shape: vec![3, 2],
            data: vec![0., 1., 2., 3., 4., 5.].into(),
        };
        let parts = pooled.split(&[&first, &second]).unwrap();
        assert_eq!(parts[1].data, vec![4., 5.]);
        assert!(pooled.split(&[&first]).is_err());
    }

    #[test]
    fn plan_respects_budget_and_covers_all() {
        let lengths = [10, 500, 12, 490, 11];
        let groups = plan(
            &lengths,
            BatchLimits {
                max_tokens: 1000,
                max_size: 2,
            },
        );
        assert_eq!(groups, vec![vec![1, 3], vec![2, 4], vec![0]]);
        let lone = plan(
            &[5000],
            BatchLimits {
                max_tokens: 100,
                max_size: 8,
            },
        );
        assert_eq!(lone, vec![vec![0]]);
    }

    #[test]
    fn plan_under_a_memory_budget_and_for_batch_dependent_graphs() {
        use crate::memory::{Fit, PassModel};
        use crate::spec::AttentionKind;
        let model = PassModel {
            hidden: 256,
            heads: 4,
            intermediate: 1024,
            attention: AttentionKind::Plain,
            element: 4,
            score_blocks: 0,
        };
        // Room for two 1000-token sequences but not three; short ones pack by the token limit.
        let fit = Fit {
            model,
            capacity: model.bytes(2, 1000) + 1,
        };
        assert!(!fit.fits(3, 1000));
        let lengths = [1000, 1000, 1000, 10, 10];
        let limits = BatchLimits::default();
        let groups = plan_within(&lengths, limits, |b, s| fit.fits(b, s));
        assert_eq!(groups, vec![vec![0, 1], vec![2, 3], vec![4]]);
        for g in &groups {
            let seq = g.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(fit.fits(g.len(), seq));
        }
        // A quantize_dynamic graph: one sequence per pass whatever else fits.
        let facts = GraphFacts {
            batch_invariant: false,
            attention: AttentionKind::Plain,
            sentence_embedding: false,
            score_blocks: 0,
        };
        let one = plan(&[5, 5, 5], limits.for_graph(&facts));
        assert_eq!(one, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(limits.for_graph(&GraphFacts::default()), limits);
    }

    #[test]
    fn one_thread_passes_are_smaller_and_an_explicit_size_stays() {
        let one = BatchLimits::default().on_one_thread();
        assert_eq!(one.max_size, BatchLimits::ONE_THREAD_MAX_SIZE);
        assert_eq!(one.max_tokens, BatchLimits::default().max_tokens);
        let groups = plan(&[9; 10], one);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let set = BatchLimits {
            max_size: 2,
            ..BatchLimits::default()
        };
        assert_eq!(set.on_one_thread(), set);
    }
}
