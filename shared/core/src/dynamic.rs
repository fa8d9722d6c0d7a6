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
//!
//! Built for a model ([`Batcher::for_model`]), it also keeps the model's rules: a graph whose
//! results depend on batch company ([`crate::GraphFacts::batch_invariant`]) never shares a
//! pass, and under a memory budget ([`Gate`]) merged passes are formed to fit it and every pass
//! reserves its estimate from the budget before it runs (waiting, boundedly, while other passes
//! hold the memory).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Tensor};
use crate::batch::{Batch, BatchLimits};
use crate::error::{Error, Result};
use crate::memory::{Budget, PassModel};
use crate::metrics::Metrics;
use crate::spec::ModelSpec;

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

/// The memory budget a model's passes reserve from, with the model's estimate.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The process-wide budget.
    pub budget: Arc<Budget>,
    /// The model's pass estimate.
    pub model: PassModel,
}

impl Gate {
    /// Whether a pass of `batch × seq` fits the budget's capacity.
    fn fits(&self, batch: usize, seq: usize) -> bool {
        self.budget.fit(self.model).fits(batch, seq)
    }
}

fn gate_fits(gate: Option<&Gate>, batch: usize, seq: usize) -> bool {
    gate.is_none_or(|g| g.fits(batch, seq))
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
    gate: Option<Gate>,
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
        Self::start(inner, options, metrics, None)
    }

    /// Wraps `inner`, the engine of the model `spec` describes: one sequence per pass for a
    /// batch-dependent graph, and passes gated by `budget` when there is one.
    pub fn for_model(
        inner: B,
        mut options: BatchingOptions,
        metrics: Arc<Metrics>,
        spec: &ModelSpec,
        budget: Option<Arc<Budget>>,
    ) -> Result<Self> {
        options.limits = options.limits.for_graph(&spec.graph);
        let gate = budget.map(|budget| Gate {
            budget,
            model: PassModel::for_spec(spec),
        });
        Self::start(inner, options, metrics, gate)
    }

    fn start(
        inner: B,
        options: BatchingOptions,
        metrics: Arc<Metrics>,
        gate: Option<Gate>,
    ) -> Result<Self> {
        let inner = Arc::new(inner);
        let queue = if options.enabled {
            let (tx, rx) = mpsc::channel();
            let (engine, recorder, worker_gate) = (inner.clone(), metrics.clone(), gate.clone());
            std::thread::Builder::new()
                .name("embedfn-batcher".into())
                .spawn(move || {
                    // Passes catch their own panics; anything else that ends the worker while
                    // senders remain leaves the model unservable, and says so.
                    let stopped = catch_unwind(AssertUnwindSafe(|| {
                        work(&*engine, &recorder, &rx, options, worker_gate.as_ref())
                    }));
                    if stopped.is_err() {
                        recorder.broken("the batching thread stopped");
                    }
                })
                .map_err(|e| Error::Backend(format!("cannot start the batching thread: {e}")))?;
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            inner,
            metrics,
            queue,
            gate,
        })
    }
}

impl<B: Backend> Backend for Batcher<B> {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let Some(queue) = &self.queue else {
            return run(&*self.inner, &self.metrics, self.gate.as_ref(), &[batch])
                .map(|mut t| t.remove(0));
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || {
            self.metrics.broken("the batching thread stopped");
            Error::Unhealthy("the batching thread has stopped; the server is restarting".into())
        };
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
fn work<B: Backend>(
    engine: &B,
    metrics: &Metrics,
    rx: &Receiver<Job>,
    options: BatchingOptions,
    gate: Option<&Gate>,
) {
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
            if now >= deadline || !fits(&pending, options.limits, gate) {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(job) => pending.push_back(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let group = take_group(&mut pending, options.limits, gate);
        let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
        // A panic anywhere in the pass (merging, the engine, splitting) fails this pass's
        // requests only; the worker goes on with the next.
        let result = catch_unwind(AssertUnwindSafe(|| run(engine, metrics, gate, &batches)))
            .unwrap_or_else(|_| Err(Error::Backend("the forward pass panicked".into())));
        match result {
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
fn fits(jobs: &VecDeque<Job>, limits: BatchLimits, gate: Option<&Gate>) -> bool {
    let rows: usize = jobs.iter().map(|j| j.batch.batch).sum();
    let seq = jobs.iter().map(|j| j.batch.seq).max().unwrap_or(0);
    rows < limits.max_size && rows * seq.max(1) < limits.max_tokens && gate_fits(gate, rows, seq)
}

/// The oldest job plus every later compatible job that keeps the pass within the limits.
fn take_group(pending: &mut VecDeque<Job>, limits: BatchLimits, gate: Option<&Gate>) -> Vec<Job> {
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
            && gate_fits(gate, r, s)
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

/// One forward pass over `parts` (merged when there are several), recorded in `metrics`, with
/// its memory reserved from the gate's budget while it runs. A panic in the engine becomes an
/// error, so a caller is never left waiting.
fn run<B: Backend>(
    engine: &B,
    metrics: &Metrics,
    gate: Option<&Gate>,
    parts: &[&Batch],
) -> Result<Vec<Tensor>> {
    let merged;
    let released;
    let mut batch = match parts {
        [one] => *one,
        _ => {
            merged = Batch::concat(parts);
            &merged
        }
    };
    let bytes = gate.map(|g| g.model.bytes(batch.batch, batch.seq));
    // Without a budget nothing says the pass is small: its memory goes back.
    if !batch.release && bytes.is_none_or(|b| b > crate::memory::RELEASE_BYTES) {
        released = Batch {
            release: true,
            ..batch.clone()
        };
        batch = &released;
    }
    let _reserved = gate
        .zip(bytes)
        .map(|(g, b)| g.budget.reserve(b))
        .transpose()?;
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
            position_ids: vec![0, 1],
            batch: 1,
            seq: 2,
            task_id,
            padding: crate::tokenize::Padding::default(),
            release: false,
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

    fn spec(batch_invariant: bool) -> ModelSpec {
        let files = crate::spec::ModelFiles {
            config_json: r#"{"hidden_size":256,"num_attention_heads":4,"intermediate_size":1024}"#
                .into(),
            ..Default::default()
        };
        let mut spec = ModelSpec::from_files(&files).unwrap();
        spec.graph.batch_invariant = batch_invariant;
        spec
    }

    /// 16 concurrent single-row callers; returns the rows of every pass the engine ran.
    fn flood(batcher: Arc<Batcher<Summer>>) -> usize {
        let handles: Vec<_> = (1..=16)
            .map(|i| {
                let b = batcher.clone();
                std::thread::spawn(move || b.forward(&batch(i, None)).unwrap().data)
            })
            .collect();
        for (i, h) in (1..=16).zip(handles) {
            assert_eq!(h.join().unwrap(), vec![2.0 * i as f32]);
        }
        batcher.inner.passes.load(Ordering::SeqCst)
    }

    #[test]
    fn a_batch_dependent_graph_never_shares_a_pass() {
        let options = BatchingOptions {
            wait: Duration::from_millis(5),
            ..BatchingOptions::default()
        };
        let metrics = Arc::new(Metrics::default());
        let b = Batcher::for_model(Summer::default(), options, metrics, &spec(false), None);
        assert_eq!(flood(Arc::new(b.unwrap())), 16);
    }

    #[test]
    fn merged_passes_fit_the_budget_and_reserve_from_it() {
        let spec = spec(true);
        let model = PassModel::for_spec(&spec);
        // Room for passes of two 2-token rows, not three.
        let budget = Arc::new(Budget::new(
            model.bytes(2, 2) + 1,
            16,
            Duration::from_secs(10),
        ));
        let options = BatchingOptions {
            wait: Duration::from_millis(5),
            ..BatchingOptions::default()
        };
        let metrics = Arc::new(Metrics::default());
        let b = Batcher::for_model(
            Summer::default(),
            options,
            metrics.clone(),
            &spec,
            Some(budget.clone()),
        )
        .unwrap();
        let passes = flood(Arc::new(b));
        // 16 rows at most two per pass.
        assert!(passes >= 8, "{passes} passes");
        let text = metrics.render();
        assert!(!text.contains("embedfn_batch_size_bucket{le=\"2\"} 0"));
        assert!(text.contains(&format!("embedfn_batch_size_bucket{{le=\"2\"}} {passes}")));
        let s = budget.state();
        assert_eq!((s.reserved, s.running), (0, 0));
    }

    #[test]
    fn only_passes_over_the_release_size_give_their_memory_back() {
        struct Released(std::sync::Mutex<Vec<bool>>);
        impl Backend for Released {
            fn forward(&self, b: &Batch) -> Result<Tensor> {
                self.0.lock().unwrap().push(b.release);
                Ok(Tensor {
                    shape: vec![b.batch, 1],
                    data: vec![0.0; b.batch].into(),
                })
            }
        }
        let model = PassModel::for_spec(&spec(true));
        let gate = Gate {
            budget: Arc::new(Budget::new(u64::MAX / 4, 16, Duration::from_secs(1))),
            model,
        };
        let engine = Released(Default::default());
        let metrics = Metrics::default();
        let long = (1..)
            .find(|&n| model.bytes(1, n) > crate::memory::RELEASE_BYTES)
            .unwrap();
        let short = Batch::pad(
            &[&crate::tokenize::Tokens {
                ids: vec![1; 8],
                type_ids: vec![0; 8],
            }],
            crate::tokenize::Padding::default(),
            None,
        );
        let big = Batch::pad(
            &[&crate::tokenize::Tokens {
                ids: vec![1; long],
                type_ids: vec![0; long],
            }],
            crate::tokenize::Padding::default(),
            None,
        );
        run(&engine, &metrics, Some(&gate), &[&short]).unwrap();
        run(&engine, &metrics, Some(&gate), &[&big]).unwrap();
        run(&engine, &metrics, None, &[&short]).unwrap();
        assert_eq!(*engine.0.lock().unwrap(), [false, true, true]);
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

    #[test]
    fn a_pass_that_panics_fails_alone_and_the_worker_goes_on() {
        /// Panics on a batch whose first id is 666, else sums like [`Summer`].
        struct Picky(Summer);
        impl Backend for Picky {
            fn forward(&self, b: &Batch) -> Result<Tensor> {
                assert_ne!(b.input_ids[0], 666, "engine bug");
                self.0.forward(b)
            }
        }
        let metrics = Arc::new(Metrics::default());
        let b = Batcher::new(
            Picky(Summer::default()),
            BatchingOptions::default(),
            metrics.clone(),
        )
        .unwrap();
        let e = b.forward(&batch(666, None)).unwrap_err();
        assert_eq!(e.status(), 500, "{e}");
        assert_eq!(b.forward(&batch(1, None)).unwrap().data.to_vec(), vec![2.0]);
        assert_eq!(metrics.unhealthy(), None);
    }
}
