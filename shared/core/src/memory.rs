//! The memory budget: what one forward pass costs, and a process-wide budget that passes reserve
//! from before they run.
//!
//! A transformer's peak memory during a pass is dominated by attention. The plain pattern that
//! exporters write (MatMul → Softmax → MatMul) materialises `batch × heads × seq²` scores, with a
//! few copies alive at once (scores, the scaled and masked scores, the softmax); fused attention
//! (`com.microsoft.MultiHeadAttention`, flash-tiled on CPU) needs only `batch × seq × hidden`.
//! [`PassModel::bytes`] estimates a pass from the model's architecture (`config.json`) and the
//! graph's attention kind ([`GraphFacts`](crate::spec::GraphFacts), read off the ONNX file by the adapter). The estimate
//! is analytic rather than calibrated by probe passes at load: a probe at the longest length
//! would cost as much time and memory as the request it guards against (seconds and gigabytes
//! for 8192 tokens, in Lambda's 10 s init), and a short probe does not show the quadratic term.
//! The factors below were checked against measured high-water marks (docs/serving.md and the test
//! `tests/test_memory.py` give the figures), and err on the side of too much.
//!
//! [`Budget`] is shared by every model of a process: resident memory after load is set aside,
//! each pass reserves its estimate before running and releases it when done, and a pass that
//! does not fit waits (for a bounded time, with a bounded number of waiters) until others
//! finish. Batches are formed so that each pass fits alone ([`Fit`]); an input that cannot fit
//! even alone is cut or refused by the embedder and reranker. No I/O here: the adapter reads the
//! limits (cgroup, Lambda, `/proc/meminfo`) and the resident size, and [`default_limit`] turns
//! them into a budget.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::{AttentionKind, ModelSpec};

const MIB: u64 = 1 << 20;

/// The estimate of one pass's peak memory for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassModel {
    /// Hidden width.
    pub hidden: u64,
    /// Attention heads.
    pub heads: u64,
    /// Feed-forward width.
    pub intermediate: u64,
    /// Attention kind of the graph.
    pub attention: AttentionKind,
    /// Bytes per activation element (4: ONNX Runtime's CPU kernels compute in f32).
    pub element: u64,
    /// `[seq, seq]` score blocks fused attention holds at once ([`crate::GraphFacts`]).
    pub score_blocks: u64,
}

/// Live copies of the `batch × heads × seq²` scores at the peak of a plain attention layer
/// (ORT 1.31 measured ≈ 2.1: scores and softmax output, plus part of the masked copy).
const SCORE_COPIES: f64 = 2.5;
/// Live `batch × seq × hidden` tensors at a layer's peak (residual, Q, K, V and their
/// head-split copies, context, layer norm) plus the output copied out of the session (twice:
/// ONNX Runtime's tensor and ours).
const HIDDEN_COPIES: u64 = 12;
/// Live `batch × seq × intermediate` tensors in the feed-forward block (up-projection, GELU).
const FFN_COPIES: u64 = 2;
/// Live copies of each `[seq, seq]` score block of fused attention that keeps them
/// (scores and probabilities; measured ≈ 1.6 on the 0.6B decoder at 32,768 tokens).
const BLOCK_COPIES: f64 = 2.0;
/// What any pass costs besides its tensors (kernel scratch, per-run state).
const FIXED: u64 = 8 * MIB;

impl PassModel {
    /// The estimate for a model: widths from `config.json` (heads default to `hidden / 64`, the
    /// FFN to `4 × hidden`), attention kind from the graph.
    pub fn for_spec(spec: &ModelSpec) -> Self {
        let hidden = spec.dims.max(1) as u64;
        Self {
            hidden,
            heads: spec
                .num_attention_heads
                .map_or((hidden / 64).max(1), |h| h.max(1) as u64),
            intermediate: spec.intermediate_size.map_or(4 * hidden, |f| f as u64),
            attention: spec.graph.attention,
            element: 4,
            score_blocks: u64::from(spec.graph.score_blocks),
        }
    }

    /// Estimated peak bytes of one pass of `batch` sequences padded to `seq` tokens.
    pub fn bytes(&self, batch: usize, seq: usize) -> u64 {
        let (b, s) = (batch as f64, seq as f64);
        let e = self.element as f64;
        let hidden = b * s * self.hidden as f64 * e;
        let ffn = b * s * self.intermediate as f64 * e;
        let attention = match self.attention {
            AttentionKind::None => 0.0,
            AttentionKind::Plain => SCORE_COPIES * b * self.heads as f64 * s * s * e,
            AttentionKind::FusedWhenAlone if batch > 1 => {
                SCORE_COPIES * b * self.heads as f64 * s * s * e
            }
            AttentionKind::Fused | AttentionKind::FusedWhenAlone => {
                2.0 * hidden + BLOCK_COPIES * self.score_blocks as f64 * s * s * e
            }
        };
        let total =
            FIXED as f64 + HIDDEN_COPIES as f64 * hidden + FFN_COPIES as f64 * ffn + attention;
        total.min(u64::MAX as f64) as u64
    }

    /// The longest sequence (≤ `max`) that one pass of one sequence can run within `capacity`
    /// bytes; 0 when not even one token fits.
    pub fn longest(&self, capacity: u64, max: usize) -> usize {
        if self.bytes(1, max) <= capacity {
            return max;
        }
        let (mut lo, mut hi) = (0, max); // bytes(1, lo) fits (or lo = 0), bytes(1, hi) does not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.bytes(1, mid) <= capacity {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A pass estimated above this gives its memory back to the system when it ends; the memory
/// of smaller ones may stay with the engine for the next pass (ONNX Runtime's arena: returning
/// and faulting in a short pass's tensors every time costs 10–15 % on MiniLM batches).
pub const RELEASE_BYTES: u64 = 64 << 20;

/// A model's pass estimate against the budget's capacity: what the planners ask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The model's estimate.
    pub model: PassModel,
    /// Bytes a single pass may use (the budget less resident memory).
    pub capacity: u64,
}

impl Fit {
    /// Whether a pass of `batch × seq` fits.
    pub fn fits(&self, batch: usize, seq: usize) -> bool {
        self.model.bytes(batch, seq) <= self.capacity
    }

    /// The longest single sequence (≤ `max`) that fits.
    pub fn longest(&self, max: usize) -> usize {
        self.model.longest(self.capacity, max)
    }
}

/// How the budget's numbers are reported (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetState {
    /// `MAX_MEMORY`.
    pub limit: u64,
    /// Resident memory after loading the models, set aside.
    pub resident: u64,
    /// Bytes reserved by passes running now.
    pub reserved: u64,
    /// Passes running now.
    pub running: usize,
    /// Passes waiting for memory.
    pub waiting: usize,
    /// Passes refused because the wait was too long or too many were waiting.
    pub refused: u64,
}

/// The process-wide memory budget (see the module docs).
#[derive(Debug)]
pub struct Budget {
    state: Mutex<BudgetState>,
    freed: Condvar,
    max_waiting: usize,
    wait: Duration,
}

impl PartialEq for Budget {
    /// Budgets are shared, not compared: equal only to themselves.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// The 503 for a pass or request that cannot be admitted; clients retry after `wait`.
pub fn overloaded(why: &str, wait: Duration) -> Error {
    Error::Overloaded {
        message: format!("the server is at capacity ({why}); retry later"),
        retry_after: wait.as_secs().clamp(1, 3600) as u32,
    }
}

impl Budget {
    /// A budget of `limit` bytes; at most `max_waiting` passes wait for memory, each at most
    /// `wait`.
    pub fn new(limit: u64, max_waiting: usize, wait: Duration) -> Self {
        Self {
            state: Mutex::new(BudgetState {
                limit,
                ..BudgetState::default()
            }),
            freed: Condvar::new(),
            max_waiting,
            wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets aside what the process holds after loading its models. Fails when nothing is left
    /// for passes.
    pub fn set_resident(&self, bytes: u64) -> Result<()> {
        let mut s = self.lock();
        s.resident = bytes;
        if bytes >= s.limit {
            return Err(Error::Model(format!(
                "MAX_MEMORY ({} MiB) is not more than the memory the loaded models take ({} MiB)",
                s.limit / MIB,
                bytes / MIB
            )));
        }
        Ok(())
    }

    /// Bytes one pass may use: the limit less resident memory.
    pub fn capacity(&self) -> u64 {
        let s = self.lock();
        s.limit.saturating_sub(s.resident)
    }

    /// A model's estimate against this budget.
    pub fn fit(&self, model: PassModel) -> Fit {
        Fit {
            model,
            capacity: self.capacity(),
        }
    }

    /// The current numbers.
    pub fn state(&self) -> BudgetState {
        *self.lock()
    }

    /// Reserves `bytes` for one pass, waiting while other passes hold the memory. A pass runs
    /// when it fits beside the running ones, or alone when nothing else runs (so a pass larger
    /// than the capacity, which the planners never form, cannot wait forever). Refused (503)
    /// when `max_waiting` passes already wait or memory is not freed within the wait.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>> {
        let mut s = self.lock();
        let admits = |s: &BudgetState| {
            s.running == 0 || s.reserved + bytes <= s.limit.saturating_sub(s.resident)
        };
        if !admits(&s) {
            if s.waiting >= self.max_waiting {
                s.refused += 1;
                return Err(overloaded("too many passes wait for memory", self.wait));
            }
            let deadline = Instant::now() + self.wait;
            s.waiting += 1;
            while !admits(&s) {
                let now = Instant::now();
                if now >= deadline {
                    s.waiting -= 1;
                    s.refused += 1;
                    return Err(overloaded("no memory was freed in time", self.wait));
                }
                s = self
                    .freed
                    .wait_timeout(s, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            s.waiting -= 1;
        }
        s.reserved += bytes;
        s.running += 1;
        Ok(Reservation {
            budget: self,
            bytes,
        })
    }
}

/// Memory held by one running pass; released on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.reserved -= self.bytes;
        s.running -= 1;
        drop(s);
        self.budget.freed.notify_all();
    }
}

/// Share of the detected memory kept free of the budget (allocator slack, the runtime, request
/// bodies).
pub const HEADROOM: f64 = 0.10;

/// The default `MAX_MEMORY`: the first known of the cgroup limit, the Lambda function's memory
/// size, and physical memory, less [`HEADROOM`]. Cgroups report "no limit" as `max` or a huge
/// number: limits beyond physical memory are ignored.
pub fn default_limit(cgroup: Option<u64>, lambda_mb: Option<u64>, physical: Option<u64>) -> u64 {
    let cgroup = cgroup.filter(|&c| c > 0 && physical.is_none_or(|p| c < p));
    let detected = cgroup
        .or(lambda_mb.map(|mb| mb * MIB))
        .or(physical)
        .unwrap_or(4096 * MIB);
    (detected as f64 * (1.0 - HEADROOM)) as u64
}

/// Parses a byte size: `2G`, `512M`, `1.5GiB`, `800000` (plain bytes); `K`/`M`/`G`/`T` are
/// binary multiples, with or without `i`/`B`.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{t}' is not a size (e.g. 2G, 512M, 1073741824)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        other => return Err(format!("unknown size unit '{other}' (use K, M, G or T)")),
    };
    Ok((value * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests;
