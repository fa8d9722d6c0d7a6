//! Cross-encoder reranking as the reference `rerank()` of jina-reranker-v2 does it.
//!
//! The query is cut to `max_query_length` tokens. Each document is cut into windows of
//! `max_length − query − pair_specials` tokens (for XLM-R's `<s> q </s></s> d </s>` that is the
//! reference's `max_length − len(<s> q </s>) − 2`) overlapping by `min(overlap, window / 4)`,
//! the last window right-aligned. Every window is scored as `sigmoid(logit)`; a document's score
//! is the max over its windows. Results are sorted by score, descending, ties by input order.

use std::ops::Range;
use std::sync::Arc;

use crate::backend::Backend;
use crate::batch::{plan_within, Batch, BatchLimits, RequestTokens, MAX_REQUEST_TOKENS};
use crate::embed::too_large_for_memory;
use crate::error::{Error, Result};
use crate::memory::{Budget, Fit, PassModel};
use crate::pooling::sigmoid;
use crate::spec::ModelSpec;
use crate::tokenize::{cut, Side, TextTokenizer, Tokens};

/// Reranker-wide options, fixed at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankOptions {
    /// Longest query, in content tokens (reference: 512).
    pub max_query_length: usize,
    /// Overlap between a long document's windows, in tokens (reference: 80).
    pub overlap: usize,
    /// Limits on each forward pass.
    pub batch: BatchLimits,
    /// Most tokens one request may run, all query–window pairs together.
    pub max_request_tokens: usize,
    /// The process's memory budget: windows are sized down and passes planned to fit it.
    pub memory: Option<Arc<Budget>>,
}

impl Default for RerankOptions {
    fn default() -> Self {
        Self {
            max_query_length: 512,
            overlap: 80,
            batch: BatchLimits::default(),
            max_request_tokens: MAX_REQUEST_TOKENS,
            memory: None,
        }
    }
}

/// One ranked document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Position in the request's `documents`.
    pub index: usize,
    /// `sigmoid(logit)`, max over the document's windows.
    pub score: f32,
}

/// The result of one rerank.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Sorted by score, descending, cut to `top_n`.
    pub results: Vec<Ranked>,
    /// Tokens run through the model, over all windows.
    pub total_tokens: usize,
}

/// A cross-encoder ready to serve.
#[derive(Debug)]
pub struct Reranker<B> {
    spec: ModelSpec,
    tokenizer: TextTokenizer,
    backend: B,
    options: RerankOptions,
}

impl<B: Backend> Reranker<B> {
    /// Builds a reranker.
    pub fn new(
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        backend: B,
        mut options: RerankOptions,
    ) -> Self {
        options.batch = options.batch.for_graph(&spec.graph);
        let tokenizer = tokenizer.with_model_padding(spec.pad_token_id, spec.pad_left);
        Self {
            spec,
            tokenizer,
            backend,
            options,
        }
    }

    /// The model spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Scores every document against the query, sorts, and keeps `top_n`.
    pub fn rerank<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
        top_n: Option<usize>,
    ) -> Result<Ranking> {
        let (scores, total_tokens) = self.scores(query, documents)?;
        let mut results: Vec<Ranked> = scores
            .into_iter()
            .enumerate()
            .map(|(index, score)| Ranked { index, score })
            .collect();
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        results.truncate(top_n.unwrap_or(usize::MAX));
        Ok(Ranking {
            results,
            total_tokens,
        })
    }

    /// Each document's score, in input order, and the tokens run.
    pub fn scores<S: AsRef<str>>(&self, query: &str, documents: &[S]) -> Result<(Vec<f32>, usize)> {
        let (logits, tokens) = self.best_logits(query, documents)?;
        Ok((logits.into_iter().map(sigmoid).collect(), tokens))
    }

    /// The reranker-wide options.
    pub fn options(&self) -> &RerankOptions {
        &self.options
    }

    fn best_logits<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
    ) -> Result<(Vec<f32>, usize)> {
        let specials = self.tokenizer.pair_specials();
        let fit = self
            .options
            .memory
            .as_ref()
            .map(|b| b.fit(PassModel::for_spec(&self.spec)));
        // Under a memory budget a pair may have to be shorter than the context length: the
        // windows shrink to what fits (at least one query and one document token).
        let max = self.spec.max_length;
        let limit = fit.as_ref().map_or(max, |f| f.longest(max));
        if limit < specials + 2 {
            return Err(too_large_for_memory(max.min(specials + 2), limit));
        }
        let budget = limit.saturating_sub(specials);
        // A query may take at most half the budget, so every window keeps room for a document.
        let max_query = self.options.max_query_length.min(budget / 2);
        let mut query = self
            .tokenizer
            .content_within(query, max_query, Side::Right)?
            .content;
        cut(&mut query, 0..max_query);
        let window = budget - query.len();

        // Tokens are counted as the pairs are made. Every content token of a document is in at
        // least one window, so a document is tokenized only as far as the request's remaining
        // tokens reach: one that goes further is refused without reading the rest of it.
        let mut count = RequestTokens::new(self.options.max_request_tokens);
        let mut pairs: Vec<Tokens> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (d, doc) in documents.iter().enumerate() {
            crate::deadline::check()?;
            let room = count.remaining();
            let content = self
                .tokenizer
                .content_within(doc.as_ref(), room + 1, Side::Right)?;
            if !content.complete {
                return Err(count.exceeded());
            }
            let content = content.content;
            for range in windows(content.len(), window, self.options.overlap) {
                let pair = self.tokenizer.pair_window(&query, &content, range)?;
                count.add(pair.len())?;
                pairs.push(pair);
                owner.push(d);
            }
        }

        let tokens = count.total();
        let logits = self.logits(&pairs, fit.as_ref())?;
        // sigmoid is monotonic: the best window's logit gives the best window's score.
        let mut best = vec![f32::NEG_INFINITY; documents.len()];
        for (logit, d) in logits.into_iter().zip(owner) {
            best[d] = best[d].max(logit);
        }
        Ok((best, tokens))
    }

    /// Each document's raw logit (max over its windows), in input order, and the tokens run
    /// (TEI's `raw_scores`).
    pub fn raw_scores<S: AsRef<str>>(
        &self,
        query: &str,
        documents: &[S],
    ) -> Result<(Vec<f32>, usize)> {
        self.best_logits(query, documents)
    }

    /// Logit (label 0) of every pair, in order.
    fn logits(&self, pairs: &[Tokens], fit: Option<&Fit>) -> Result<Vec<f32>> {
        let lengths: Vec<usize> = pairs.iter().map(Tokens::len).collect();
        let mut out = vec![0f32; pairs.len()];
        let fits = |batch, seq| fit.is_none_or(|f| f.fits(batch, seq));
        for group in plan_within(&lengths, self.options.batch, fits) {
            crate::deadline::check()?;
            let rows: Vec<&Tokens> = group.iter().map(|&i| &pairs[i]).collect();
            let batch = Batch::pad(&rows, self.tokenizer.padding(), None);
            let t = self.backend.forward(&batch)?;
            let labels = match t.shape.as_slice() {
                [b] if *b == batch.batch => 1,
                [b, l] if *b == batch.batch && *l > 0 => *l,
                _ => {
                    return Err(Error::Backend(format!(
                        "unexpected cross-encoder output shape {:?} for a batch of {}",
                        t.shape, batch.batch
                    )))
                }
            };
            for (row, &i) in group.iter().enumerate() {
                out[i] = t.data[row * labels];
            }
        }
        Ok(out)
    }
}

/// The windows a document of `len` content tokens is cut into: `window` tokens each, stepping by
/// `window − min(overlap, window / 4)`, the last one right-aligned. A short document is one
/// window.
pub fn windows(len: usize, window: usize, overlap: usize) -> Vec<Range<usize>> {
    let window = window.max(1);
    if len <= window {
        return std::iter::once(0..len).collect();
    }
    let step = window - overlap.min(window / 4);
    let mut out = Vec::new();
    let mut start = 0;
    while start + window < len {
        out.push(start..start + window);
        start += step;
    }
    out.push(len - window..len);
    out
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one window is exactly what is expected
    fn short_document_is_one_window() {
        assert_eq!(windows(10, 100, 80), [0..10]);
        assert_eq!(windows(0, 100, 80), [0..0]);
    }

    #[test]
    fn long_document_overlaps_and_ends_right_aligned() {
        // window 100, overlap min(80, 25) = 25, step 75
        assert_eq!(windows(250, 100, 80), vec![0..100, 75..175, 150..250]);
        assert_eq!(
            windows(260, 100, 80),
            vec![0..100, 75..175, 150..250, 160..260]
        );
    }

    #[test]
    fn overlap_is_capped_by_the_reference_80() {
        // window 1000: overlap 80, step 920
        assert_eq!(windows(1500, 1000, 80), vec![0..1000, 500..1500]);
        assert_eq!(
            windows(2000, 1000, 80),
            vec![0..1000, 920..1920, 1000..2000]
        );
    }
}
