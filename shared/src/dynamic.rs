//! Dynamic batching across requests, in the manner of text-embeddings-inference: concurrent
//! requests' batches wait in one queue, and a worker thread runs whatever is queued as one
//! forward pass under a token budget, so many single-text clients get batch throughput.
//!
//! [`Batcher`] is itself a [`Backend`], wrapped around the engine's: the core's embedder and
//! reranker stay unaware of it, and an adapter without threads (a Wasm component) simply does
//! not enable it. The worker takes everything queued when the engine becomes free and, if that
//! is under the budget, waits up to `wait` for more (0: no waiting, batching only what piles up
//! while a pass runs). Batches that cannot share a pass (another task adapter) wait for the
//! next one. Every pass, merged or not, is recorded in [`Metrics`].

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Tensor};
use crate::batch::{Batch, BatchLimits};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How requests are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Queue concurrent requests' batches into shared passes; `false` runs each directly.
    pub enabled: bool,
    /// Limits on a merged pass.
    pub limits: BatchLimits,
    /// How long the worker may wait for more work when a pass is under the limits.
    pub wait: Duration,
}

impl Default for BatchingOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            limits: BatchLimits::default(),
            wait: Duration::ZERO,
        }
    }
}

struct Job {
    batch: Batch,
    reply: SyncSender<Result<Tensor>>,
}

/// A backend that batches across callers (see the module docs).
pub struct Batcher<B> {
    inner: Arc<B>,
    metrics: Arc<Metrics>,
    queue: Option<Sender<Job>>,
}

impl<B> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.queue.is_some())
            .finish()
    }
}

impl<B: Backend + 'static> Batcher<B> {
    /// Wraps `inner`; starts the worker thread when batching is enabled.
    pub fn new(inner: B, options: BatchingOptions, metrics: Arc<Metrics>) -> Result<Self> {
        let inner = Arc::new(inner);
        let queue = if options.enabled {
            let (tx, rx) = mpsc::channel();
            let (engine, recorder) = (inner.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("embedfn-batcher".into())
                .spawn(move || work(&*engine, &recorder, &rx, options))
                .map_err(|e| Error::Backend(format!("cannot start the batching thread: {e}")))?;
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            inner,
            metrics,
            queue,
        })
    }
}

impl<B: Backend> Backend for Batcher<B> {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let Some(queue) = &self.queue else {
            return run(&*self.inner, &self.metrics, &[batch]).map(|mut t| t.remove(0));
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || Error::Backend("the batching thread has stopped".into());
        queue
            .send(Job {
                batch: batch.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

/// The worker: gathers queued jobs into passes until every sender is gone.
fn work<B: Backend>(engine: &B, metrics: &Metrics, rx: &Receiver<Job>, options: BatchingOptions) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        let deadline = Instant::now() + options.wait;
        loop {
            pending.extend(rx.try_iter());
            let now = Instant::now();
            if now >= deadline || !fits(&pending, options.limits) {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(job) => pending.push_back(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let group = take_group(&mut pending, options.limits);
        let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
        match run(engine, metrics, &batches) {
            Ok(tensors) => {
                for (job, tensor) in group.iter().zip(tensors) {
                    let _ = job.reply.send(Ok(tensor));
                }
            }
            Err(e) => {
                for job in &group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether all of `jobs` would fit one pass (so waiting for more could still help).
fn fits(jobs: &VecDeque<Job>, limits: BatchLimits) -> bool {
    let rows: usize = jobs.iter().map(|j| j.batch.batch).sum();
    let seq = jobs.iter().map(|j| j.batch.seq).max().unwrap_or(0);
    rows < limits.max_size && rows * seq.max(1) < limits.max_tokens
}

/// The oldest job plus every later compatible job that keeps the pass within the limits.
fn take_group(pending: &mut VecDeque<Job>, limits: BatchLimits) -> Vec<Job> {
    let Some(first) = pending.pop_front() else {
        return Vec::new();
    };
    let (mut rows, mut seq) = (first.batch.batch, first.batch.seq);
    let mut group = vec![first];
    let mut rest = VecDeque::with_capacity(pending.len());
    while let Some(job) = pending.pop_front() {
        let (r, s) = (rows + job.batch.batch, seq.max(job.batch.seq));
        if job.batch.compatible(&group[0].batch)
            && r <= limits.max_size
            && r * s <= limits.max_tokens
        {
            (rows, seq) = (r, s);
            group.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *pending = rest;
    group
}

/// One forward pass over `parts` (merged when there are several), recorded in `metrics`. A
/// panic in the engine becomes an error, so a caller is never left waiting.
fn run<B: Backend>(engine: &B, metrics: &Metrics, parts: &[&Batch]) -> Result<Vec<Tensor>> {
    let merged;
    let batch = match parts {
        [one] => *one,
        _ => {
            merged = Batch::concat(parts);
            &merged
        }
    };
    let started = Instant::now();
    let output = catch_unwind(AssertUnwindSafe(|| engine.forward(batch)))
        .unwrap_or_else(|_| Err(Error::Backend("the inference engine panicked".into())))?;
    metrics.forward(
        batch.batch,
        batch.real_tokens(),
        batch.batch * batch.seq,
        started.elapsed(),
    );
    match parts {
        [_] => Ok(vec![output]),
        _ => output.split(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Output = one value per row: the sum of its ids; counts the passes it ran.
    #[derive(Default)]
    struct Summer {
        passes: AtomicUsize,
    }

    impl Backend for Summer {
        fn forward(&self, b: &Batch) -> Result<Tensor> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            let data = b
                .input_ids
                .chunks(b.seq.max(1))
                .map(|row| row.iter().sum::<i64>() as f32)
                .collect();
            Ok(Tensor {
                shape: vec![b.batch, 1],
                data,
            })
        }
    }

    fn batch(id: i64, task_id: Option<i64>) -> Batch {
        Batch {
            input_ids: vec![id, id],
            attention_mask: vec![1, 1],
            token_type_ids: vec![0, 0],
            batch: 1,
            seq: 2,
            task_id,
            pad_id: 0,
        }
    }

    #[test]
    fn concurrent_callers_share_passes_and_get_their_own_rows() {
        let metrics = Arc::new(Metrics::default());
        let batcher = Arc::new(
            Batcher::new(
                Summer::default(),
                BatchingOptions {
                    wait: Duration::from_millis(5),
                    ..BatchingOptions::default()
                },
                metrics,
            )
            .unwrap(),
        );
        let handles: Vec<_> = (1..=16)
            .map(|i| {
                let b = batcher.clone();
                std::thread::spawn(move || b.forward(&batch(i, Some(i % 2))).unwrap().data)
            })
            .collect();
        for (i, h) in (1..=16).zip(handles) {
            assert_eq!(h.join().unwrap(), vec![2.0 * i as f32]);
        }
        let passes = batcher.inner.passes.load(Ordering::SeqCst);
        assert!(passes < 16, "{passes} passes for 16 concurrent callers");
    }

    #[test]
    fn disabled_runs_directly_and_errors_reach_the_caller() {
        struct Failing;
        impl Backend for Failing {
            fn forward(&self, _: &Batch) -> Result<Tensor> {
                panic!("engine bug")
            }
        }
        let metrics = Arc::new(Metrics::default());
        for enabled in [false, true] {
            let options = BatchingOptions {
                enabled,
                ..BatchingOptions::default()
            };
            let b = Batcher::new(Failing, options, metrics.clone()).unwrap();
            let e = b.forward(&batch(1, None)).unwrap_err();
            assert!(e.to_string().contains("panicked"), "{e}");
        }
    }
}
