//! Counters and histograms for `GET /metrics`, in the Prometheus text format.
//!
//! The route table records every request (route, status, latency); whatever runs forward passes
//! (the dynamic batcher, or an adapter calling [`Metrics::forward`]) records batch sizes and
//! tokens. Locks are held for a few additions, nothing next to a forward pass. The memory
//! budget ([`Metrics::watch_budget`]) and the adapter's request queue ([`Metrics::queue`]) are
//! shown as gauges.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::memory::Budget;

/// Upper bounds (seconds) of the latency buckets.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets (sequences per forward pass).
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        if let Some(i) = bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct State {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    forward_seconds: Histogram,
    batch_size: Histogram,
    tokens: u64,
    padded_tokens: u64,
    queue: QueueState,
    budget: Option<Arc<Budget>>,
    /// Why the process can no longer serve (a worker stopped), once it cannot.
    broken: Option<String>,
}

/// The adapter's request queue, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueState {
    /// Requests running now.
    pub running: usize,
    /// Requests waiting for a slot.
    pub waiting: usize,
    /// The most that may wait (`MAX_QUEUE`).
    pub capacity: usize,
    /// Requests turned away because the queue was full or the wait too long.
    pub rejected: u64,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain counters: still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// One answered request: `route` is the route table's path (or `"unknown"`).
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.with(|s| {
            *s.requests.entry((route, status)).or_default() += 1;
            s.latency
                .entry(route)
                .or_default()
                .observe(SECONDS, took.as_secs_f64());
        });
    }

    /// One forward pass of `sequences` rows holding `tokens` real of `padded` tokens.
    pub fn forward(&self, sequences: usize, tokens: usize, padded: usize, took: Duration) {
        self.with(|s| {
            s.batch_size.observe(SIZES, sequences as f64);
            s.forward_seconds.observe(SECONDS, took.as_secs_f64());
            s.tokens += tokens as u64;
            s.padded_tokens += padded as u64;
        });
    }

    /// Shows `budget` (limit, resident, reserved, passes waiting) at `/metrics`.
    pub fn watch_budget(&self, budget: Arc<Budget>) {
        self.with(|s| s.budget = Some(budget));
    }

    /// Records that a worker running the model has stopped: `/health` answers 503 from now
    /// on, and a native adapter exits for its supervisor to restart it.
    pub fn broken(&self, why: impl Into<String>) {
        let why = why.into();
        self.with(|s| s.broken.get_or_insert(why).clone());
    }

    /// Why the process can no longer serve, when it cannot.
    pub fn unhealthy(&self) -> Option<String> {
        self.with(|s| s.broken.clone())
    }

    /// The adapter's request queue now.
    pub fn queue(&self, queue: QueueState) {
        self.with(|s| s.queue = queue);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let (queue, budget) = self.with(|s| (s.queue, s.budget.clone()));
        let mut out = self.render_counters();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        if let Some(budget) = budget {
            let b = budget.state();
            gauge(
                "embedfn_memory_budget_bytes",
                "The memory budget (MAX_MEMORY).",
                b.limit,
            );
            gauge(
                "embedfn_memory_resident_bytes",
                "Resident memory after loading the models, set aside from the budget.",
                b.resident,
            );
            gauge(
                "embedfn_memory_reserved_bytes",
                "Bytes reserved by the forward passes running now.",
                b.reserved,
            );
            gauge(
                "embedfn_passes_running",
                "Forward passes running now.",
                b.running as u64,
            );
            gauge(
                "embedfn_passes_waiting",
                "Forward passes waiting for memory.",
                b.waiting as u64,
            );
            gauge(
                "embedfn_passes_refused_total",
                "Forward passes refused (503) for lack of memory in time.",
                b.refused,
            );
        }
        gauge(
            "embedfn_requests_running",
            "Requests running now.",
            queue.running as u64,
        );
        gauge(
            "embedfn_queue_depth",
            "Requests waiting for a slot.",
            queue.waiting as u64,
        );
        gauge(
            "embedfn_queue_capacity",
            "The most requests that may wait (MAX_QUEUE).",
            queue.capacity as u64,
        );
        gauge(
            "embedfn_requests_rejected_total",
            "Requests turned away (503) because the queue was full or the wait too long.",
            queue.rejected,
        );
        out
    }

    fn render_counters(&self) -> String {
        let s = self.with(|s| {
            (
                s.requests.clone(),
                s.latency.clone(),
                s.forward_seconds.clone(),
                s.batch_size.clone(),
                s.tokens,
                s.padded_tokens,
            )
        });
        let (requests, latency, forward, sizes, tokens, padded) = s;
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "embedfn_requests_total",
            "counter",
            "Requests answered, by route and HTTP status.",
        );
        for ((route, status), n) in &requests {
            let _ = writeln!(
                out,
                "embedfn_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut out,
            "embedfn_request_errors_total",
            "counter",
            "Requests answered with an error status, by route and class (client 4xx, server 5xx).",
        );
        let mut errors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((route, status), n) in &requests {
            let class = match status {
                400..=499 => "client",
                500.. => "server",
                _ => continue,
            };
            *errors.entry((route, class)).or_default() += n;
        }
        for ((route, class), n) in errors {
            let _ = writeln!(
                out,
                "embedfn_request_errors_total{{route=\"{route}\",class=\"{class}\"}} {n}"
            );
        }
        family(
            &mut out,
            "embedfn_request_duration_seconds",
            "histogram",
            "Time from request to reply inside the route table, by route.",
        );
        for (route, h) in &latency {
            h.render(
                &mut out,
                "embedfn_request_duration_seconds",
                &format!("route=\"{route}\""),
                SECONDS,
            );
        }
        family(
            &mut out,
            "embedfn_batch_size",
            "histogram",
            "Sequences per forward pass.",
        );
        sizes.render(&mut out, "embedfn_batch_size", "", SIZES);
        family(
            &mut out,
            "embedfn_forward_duration_seconds",
            "histogram",
            "Time per forward pass.",
        );
        forward.render(&mut out, "embedfn_forward_duration_seconds", "", SECONDS);
        family(
            &mut out,
            "embedfn_tokens_total",
            "counter",
            "Real (unpadded) tokens run through the models.",
        );
        let _ = writeln!(out, "embedfn_tokens_total {tokens}");
        family(
            &mut out,
            "embedfn_padded_tokens_total",
            "counter",
            "Tokens run including padding.",
        );
        let _ = writeln!(out, "embedfn_padded_tokens_total {padded}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/api/embed", 200, Duration::from_millis(3));
        m.request("/api/embed", 200, Duration::from_millis(30));
        m.request("/api/embed", 400, Duration::from_micros(100));
        m.forward(4, 20, 32, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("embedfn_requests_total{route=\"/api/embed\",status=\"200\"} 2"));
        assert!(
            text.contains("embedfn_request_errors_total{route=\"/api/embed\",class=\"client\"} 1")
        );
        assert!(text.contains(
            "embedfn_request_duration_seconds_bucket{route=\"/api/embed\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "embedfn_request_duration_seconds_bucket{route=\"/api/embed\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("embedfn_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("embedfn_tokens_total 20"));
        assert!(text.contains("embedfn_padded_tokens_total 32"));
        assert!(text.contains("embedfn_queue_depth 0"));
        assert!(!text.contains("embedfn_memory_budget_bytes"));
        let budget = Arc::new(Budget::new(1 << 30, 4, Duration::from_secs(1)));
        budget.set_resident(1 << 28).unwrap();
        m.watch_budget(budget.clone());
        m.queue(QueueState {
            running: 2,
            waiting: 3,
            capacity: 8,
            rejected: 1,
        });
        let _pass = budget.reserve(1000).unwrap();
        let text = m.render();
        assert!(text.contains("embedfn_memory_budget_bytes 1073741824"));
        assert!(text.contains("embedfn_memory_resident_bytes 268435456"));
        assert!(text.contains("embedfn_memory_reserved_bytes 1000"));
        assert!(text.contains("# TYPE embedfn_queue_depth gauge\nembedfn_queue_depth 3"));
        assert!(text.contains("embedfn_requests_rejected_total 1"));
    }
}
