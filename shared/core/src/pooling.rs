//! Pooling and vector post-processing as small pure functions.
//!
//! Order matters for Matryoshka models: truncate to the requested dimension **first**, then
//! L2-normalise (normalising before truncating leaves vectors that are not unit length).

/// How token embeddings become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens whose attention mask is 1.
    Mean,
    /// The first token's (`[CLS]` / `<s>`) embedding.
    Cls,
    /// The element-wise maximum over the tokens whose attention mask is 1.
    Max,
    /// The last token whose attention mask is 1 (decoder embedders: Qwen3-Embedding,
    /// jina-embeddings-v5), wherever the padding is.
    LastToken,
}

impl Pooling {
    /// Pools one sequence: `tokens` is `[seq, hidden]` row-major, `mask` is `[seq]`.
    pub fn pool(self, tokens: &[f32], mask: &[i64], hidden: usize) -> Vec<f32> {
        match self {
            Pooling::Mean => mean(tokens, mask, hidden),
            // An empty sequence (no rows) pools to zeros, as the mean of nothing does.
            Pooling::Cls => tokens
                .get(..hidden)
                .map_or_else(|| vec![0.0; hidden], <[f32]>::to_vec),
            Pooling::Max => max(tokens, mask, hidden),
            Pooling::LastToken => mask
                .iter()
                .rposition(|&m| m != 0)
                .and_then(|i| tokens.get(i * hidden..(i + 1) * hidden))
                .map_or_else(|| vec![0.0; hidden], <[f32]>::to_vec),
        }
    }
}

/// Element-wise maximum of the token rows whose mask is non-zero (zeros when there are none).
pub fn max(tokens: &[f32], mask: &[i64], hidden: usize) -> Vec<f32> {
    let mut out: Option<Vec<f32>> = None;
    for (row, _) in tokens
        .chunks_exact(hidden)
        .zip(mask)
        .filter(|(_, &m)| m != 0)
    {
        match &mut out {
            None => out = Some(row.to_vec()),
            Some(o) => o.iter_mut().zip(row).for_each(|(a, &b)| *a = a.max(b)),
        }
    }
    out.unwrap_or_else(|| vec![0.0; hidden])
}

/// Mean of the token rows whose mask is non-zero (the sentence-transformers formula, with the
/// same 1e-9 floor on the count).
pub fn mean(tokens: &[f32], mask: &[i64], hidden: usize) -> Vec<f32> {
    let mut sum = vec![0f32; hidden];
    let mut count = 0f32;
    for (row, &m) in tokens.chunks_exact(hidden).zip(mask) {
        if m != 0 {
            count += 1.0;
            sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    sum
}

/// Mean of the rows `start..end` (late chunking: one input's span in the joint sequence).
pub fn mean_span(tokens: &[f32], hidden: usize, start: usize, end: usize) -> Vec<f32> {
    let rows = &tokens[start * hidden..end * hidden];
    let mask = vec![1i64; end - start];
    mean(rows, &mask, hidden)
}

/// Keeps the first `dims` components (Matryoshka truncation).
pub fn truncate(mut v: Vec<f32>, dims: usize) -> Vec<f32> {
    v.truncate(dims);
    v
}

/// Scales `v` to unit L2 length; a zero vector stays zero.
pub fn l2_normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The logistic function: a cross-encoder logit to a relevance score in (0, 1).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ignores_masked_rows() {
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        assert_eq!(mean(&tokens, &[1, 1, 0], 2), vec![2.0, 3.0]);
    }

    #[test]
    fn cls_takes_first_row() {
        let tokens = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(Pooling::Cls.pool(&tokens, &[1, 1], 2), vec![1.0, 2.0]);
    }

    #[test]
    fn last_token_and_max_follow_the_mask_on_either_side() {
        let tokens = [1.0, 5.0, 3.0, 2.0, 9.0, 9.0];
        assert_eq!(
            Pooling::LastToken.pool(&tokens, &[1, 1, 0], 2),
            vec![3.0, 2.0]
        );
        assert_eq!(
            Pooling::LastToken.pool(&tokens, &[0, 1, 1], 2),
            vec![9.0, 9.0]
        );
        assert_eq!(Pooling::Max.pool(&tokens, &[1, 1, 0], 2), vec![3.0, 5.0]);
        assert_eq!(Pooling::Max.pool(&tokens, &[0, 0, 0], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn an_empty_sequence_pools_to_zeros() {
        assert_eq!(Pooling::Cls.pool(&[], &[], 2), vec![0.0, 0.0]);
        assert_eq!(Pooling::Mean.pool(&[], &[], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn truncate_then_normalize_gives_unit_vectors() {
        let v = l2_normalize(truncate(vec![3.0, 4.0, 12.0], 2));
        assert_eq!(v, vec![0.6, 0.8]);
    }

    #[test]
    fn zero_vector_stays_zero() {
        assert_eq!(l2_normalize(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn sigmoid_of_zero_is_half() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(20.0) > 0.999);
    }

    #[test]
    fn mean_span_averages_rows() {
        let tokens = [0.0, 0.0, 2.0, 4.0, 4.0, 8.0, 9.0, 9.0];
        assert_eq!(mean_span(&tokens, 2, 1, 3), vec![3.0, 6.0]);
    }
}
