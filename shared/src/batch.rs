//! Batching inside a request: sort by length, group under a token budget, pad each group to its
//! own longest sequence. Results are scattered back into input order by the callers.

use crate::tokenize::Tokens;

/// A padded batch, row-major `[batch, seq]`, ready for a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Token ids, padded with the tokenizer's pad id.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids (0 for padding).
    pub token_type_ids: Vec<i64>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
    /// The task adapter for the whole batch (Jina v3 `task_id`), when the model has tasks.
    pub task_id: Option<i64>,
}

impl Batch {
    /// Pads `seqs` to their longest length.
    pub fn pad(seqs: &[&Tokens], pad_id: i64, task_id: Option<i64>) -> Self {
        let seq = seqs.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut b = Batch {
            input_ids: Vec::with_capacity(seqs.len() * seq),
            attention_mask: Vec::with_capacity(seqs.len() * seq),
            token_type_ids: Vec::with_capacity(seqs.len() * seq),
            batch: seqs.len(),
            seq,
            task_id,
        };
        for t in seqs {
            let pad = seq - t.len();
            b.input_ids.extend(&t.ids);
            b.input_ids.extend(std::iter::repeat_n(pad_id, pad));
            b.attention_mask.extend(std::iter::repeat_n(1, t.len()));
            b.attention_mask.extend(std::iter::repeat_n(0, pad));
            b.token_type_ids.extend(&t.type_ids);
            b.token_type_ids.extend(std::iter::repeat_n(0, pad));
        }
        b
    }

    /// The attention mask of row `i`.
    pub fn mask(&self, i: usize) -> &[i64] {
        &self.attention_mask[i * self.seq..(i + 1) * self.seq]
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
            max_size: 64,
        }
    }
}

/// Groups sequence indices into forward passes: longest first, so each group's padding is
/// bounded by its first member, and no group exceeds the limits (but each holds at least one).
pub fn plan(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g)
                if g.len() < limits.max_size
                    && (g.len() + 1) * lengths[g[0]].max(1) <= limits.max_tokens =>
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
        let batch = Batch::pad(&[&a, &b], 1, Some(3));
        assert_eq!(batch.input_ids, vec![5, 6, 7, 8, 1, 1]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.mask(1), &[1, 0, 0]);
        assert_eq!((batch.batch, batch.seq, batch.task_id), (2, 3, Some(3)));
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
}
