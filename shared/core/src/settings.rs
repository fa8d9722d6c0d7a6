//! Every setting of every adapter, parsed once.
//!
//! The native server, the Lambda function, embedfn-host and the Spin component read the same
//! variables with the same defaults and meanings. Each adapter hands [`Settings::from_lookup`]
//! its own lookup (the process environment, the component's live WASI environment or Spin
//! variables); facts that need I/O (physical cores, the cgroup memory limit) stay `None` here and
//! are filled in by the native engine crate. [`SETTINGS`] is the table that `docs/configuration.md`
//! shows (a test checks that they agree), and the list embedfn-host forwards to its component.

use std::time::Duration;

use crate::app::{ApiKey, Limits};
use crate::batch::{BatchLimits, MAX_REQUEST_TOKENS};
use crate::cors::Cors;
use crate::memory::parse_bytes;
use crate::spec::Quantization;

/// Where a setting applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every adapter, the Spin component included (embedfn-host forwards it to its guest).
    All,
    /// The native processes only (`embedfn`, embedfn-host): engine, network and process settings.
    Native,
}

/// One row of the settings table.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as the docs state it.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// Where it applies.
    pub scope: Scope,
}

const fn row(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
    scope: Scope,
) -> Setting {
    Setting {
        name,
        default,
        meaning,
        scope,
    }
}

/// Every setting, in the order the docs list them.
pub const SETTINGS: &[Setting] = &[
    row("EMBEDDINGS_MODEL_ID", "`jinaai/jina-embeddings-v3` (component: `/models/embedder`)", "Embedding models: Hugging Face ids or local directories, comma-separated; the first is the default; `none` serves none; a family id (`jinaai/jina-embeddings-v5-text-small`, `-nano`) stands for its four per-task repositories", Scope::All),
    row("RERANKER_MODEL_ID", "`jinaai/jina-reranker-v2-base-multilingual` (component: `none`)", "Cross-encoder rerankers, the same way", Scope::All),
    row("ONNX_QUANTIZATION", "`none`", "Which ONNX file: `none` (fp32), `fp16`, `int8`, `uint8`, `quantized`, `q4`, `bnb4`", Scope::All),
    row("TASK_INSTRUCTIONS", "`true`", "Prepend the task's instruction (jina-embeddings-v3) to each text", Scope::All),
    row("DEFAULT_TASK", "`text-matching` when the model has it", "Task for requests that name none", Scope::All),
    row("MAX_BODY_BYTES", "`8388608`", "Largest request body (413 beyond)", Scope::All),
    row("MAX_INPUTS", "`2048`", "Inputs per embedding request (400 beyond)", Scope::All),
    row("MAX_DOCUMENTS", "`1000`", "Documents per rerank request (400 beyond)", Scope::All),
    row("MAX_REQUEST_TOKENS", "`262144`", "Tokens one request may run or tokenize, all inputs or query-window pairs together (413 beyond, found before the rest is tokenized)", Scope::All),
    row("MAX_EMBED_ALL_VALUES", "`4194304`", "Numbers (tokens × width) one TEI `/embed_all` answer may hold (413 beyond)", Scope::All),
    row("MAX_BATCH_TOKENS", "`16384`", "Tokens (padded) per forward pass", Scope::All),
    row("MAX_BATCH_SIZE", "`16` (CUDA: `64`; tract build: `4`)", "Sequences per forward pass", Scope::All),
    row("API_KEY", "unset", "When set, every route but `/health` needs `Authorization: Bearer <key>`", Scope::All),
    row("CORS_ALLOW_ORIGINS", "unset (no CORS)", "Origins (comma-separated, or `*`) whose browser requests are allowed: `Access-Control-Allow-Origin` and preflight answers", Scope::All),
    row("HOST", "`127.0.0.1` (the container image: `0.0.0.0`)", "Listen address of `embedfn` and embedfn-host: set `0.0.0.0` to serve other machines (with `API_KEY`)", Scope::Native),
    row("PORT", "`8000`", "Listen port", Scope::Native),
    row("MODEL_CACHE_DIR", "`models` (Lambda: `/tmp/models`)", "Where hub downloads go (optimized graphs: `ORT_CACHE_DIR`)", Scope::Native),
    row("USE_CUDA", "auto", "`true`/`false`: the CUDA execution provider; unset uses it when present", Scope::Native),
    row("ORT_INTRA_THREADS", "physical cores", "ONNX Runtime intra-op threads", Scope::Native),
    row("ORT_SPINNING", "on in Lambda and where a cgroup CPU quota gives the process whole cores for its threads; else off", "`true`/`false`: ONNX Runtime's intra-op threads spin between pieces of work instead of sleeping (shorter passes on CPUs the process owns; CPU taken from neighbours on shared ones)", Scope::Native),
    row("DYNAMIC_BATCHING", "`true` (Lambda: `false`, unless `AWS_LAMBDA_MAX_CONCURRENCY` > 1)", "Batch concurrent requests into shared forward passes", Scope::Native),
    row("BATCH_WAIT_MS", "`0`", "How long a pass waits for more requests", Scope::Native),
    row("MAX_MEMORY", "cgroup limit, else Lambda memory, else physical memory, less 10 %", "Memory budget every pass is planned and admitted under (`2G`, `512M`)", Scope::Native),
    row("MAX_CONCURRENT_REQUESTS", "`64`", "Requests that run at once", Scope::Native),
    row("MAX_QUEUE", "`256`", "Requests (and passes waiting for memory) that may wait; beyond: 503", Scope::Native),
    row("MAX_QUEUE_WAIT_MS", "`30000`", "Longest wait for a slot or for memory; beyond: 503 with `Retry-After`", Scope::Native),
    row("BODY_TIMEOUT_MS", "`30000`", "Time a client has to send its whole body (408 beyond); until then it holds no slot", Scope::Native),
    row("REQUEST_TIMEOUT_MS", "`120000`", "Time a request may run once admitted (504 beyond); its work stops at the next pass, as when the client disconnects", Scope::Native),
    row("SHUTDOWN_GRACE_MS", "`25000`", "After SIGTERM/SIGINT, how long in-flight requests may finish before the process exits", Scope::Native),
];

/// Settings that are secrets: read per request by the component, never passed to a
/// pre-initialisation (whose memory is shipped).
pub const SECRETS: &[&str] = &["API_KEY"];

/// Whether to use the CUDA execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cuda {
    /// Use it when ONNX Runtime has it, else fall back to CPU with a log line.
    Auto,
    /// `USE_CUDA=true`: try it; fall back to CPU with a warning.
    On,
    /// `USE_CUDA=false`.
    Off,
}

/// The bounded request queue of a native server (and the wait for memory of every pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Requests that run at once; `MAX_CONCURRENT_REQUESTS`.
    pub max_running: usize,
    /// Requests (and, separately, passes waiting for memory) that may wait; beyond: 503.
    pub max_queue: usize,
    /// The longest wait for a slot or for memory; beyond: 503 with `Retry-After`.
    pub max_wait: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_running: 64,
            max_queue: 256,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Which defaults apply: a native process can download from the hub; a component reads the
/// directories mounted into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `embedfn` (server, container, Lambda) and embedfn-host.
    Native,
    /// The Spin component.
    Component,
}

/// Every setting, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HOST`.
    pub host: String,
    /// `PORT`.
    pub port: u16,
    /// `EMBEDDINGS_MODEL_ID`, split; empty for `none`.
    pub embeddings_models: Vec<String>,
    /// `RERANKER_MODEL_ID`, split; empty for `none`.
    pub reranker_models: Vec<String>,
    /// `MODEL_CACHE_DIR`.
    pub model_cache_dir: String,
    /// `ONNX_QUANTIZATION`.
    pub quantization: Quantization,
    /// `USE_CUDA`.
    pub cuda: Cuda,
    /// `ORT_INTRA_THREADS`; `None`: physical cores (the engine counts them).
    pub intra_threads: Option<usize>,
    /// `ORT_SPINNING`; `None`: the engine decides from where it runs.
    pub spinning: Option<bool>,
    /// `TASK_INSTRUCTIONS`.
    pub task_instructions: bool,
    /// `DEFAULT_TASK`.
    pub default_task: Option<String>,
    /// `MAX_BATCH_TOKENS`, when set.
    pub max_batch_tokens: Option<usize>,
    /// `MAX_BATCH_SIZE`, when set.
    pub max_batch_size: Option<usize>,
    /// `MAX_BODY_BYTES`, `MAX_INPUTS`, `MAX_DOCUMENTS`.
    pub limits: Limits,
    /// `MAX_REQUEST_TOKENS`.
    pub max_request_tokens: usize,
    /// `DYNAMIC_BATCHING` (default: on, except in Lambda).
    pub dynamic_batching: bool,
    /// `BATCH_WAIT_MS`.
    pub batch_wait: Duration,
    /// `API_KEY`.
    pub api_key: Option<ApiKey>,
    /// `CORS_ALLOW_ORIGINS`.
    pub cors: Cors,
    /// `MAX_MEMORY`; `None`: detected by the native engine crate.
    pub max_memory: Option<u64>,
    /// `MAX_CONCURRENT_REQUESTS`, `MAX_QUEUE`, `MAX_QUEUE_WAIT_MS`.
    pub admission: Admission,
    /// `BODY_TIMEOUT_MS`.
    pub body_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_MS`.
    pub shutdown_grace: Duration,
    /// `AWS_LAMBDA_RUNTIME_API` is set: this process is a Lambda function.
    pub in_lambda: bool,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, MB (one input of the default memory budget).
    pub lambda_memory_mb: Option<u64>,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`: this init is snapshotted (Lambda
    /// SnapStart), so every model is warmed before the snapshot is taken.
    pub snap_start: bool,
    /// `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda Managed Instances): invocations one environment
    /// takes at once; above 1, dynamic batching is on by default, as on a server.
    pub lambda_concurrency: usize,
}

/// A variable that is set but cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was refused.
    pub why: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={:?}: {}", self.name, self.value, self.why)
    }
}

impl std::error::Error for SettingError {}

type Parsed<T> = std::result::Result<T, SettingError>;

/// The lookup with empty values treated as unset, and the typed readers on top of it.
struct Reader<F>(F);

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Parsed<Option<T>> {
        self.get(name)
            .map(|v| {
                parse(v.trim()).map_err(|why| SettingError {
                    name,
                    value: v.clone(),
                    why,
                })
            })
            .transpose()
    }

    fn number(&self, name: &'static str) -> Parsed<Option<usize>> {
        self.parsed(name, |v| {
            v.parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        })
    }

    fn flag(&self, name: &'static str) -> Parsed<Option<bool>> {
        self.parsed(name, |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }

    fn models(&self, name: &str, default: &str) -> Vec<String> {
        let value = self.get(name).unwrap_or_else(|| default.to_string());
        let mut ids: Vec<String> = Vec::new();
        // A family's id (jina-embeddings-v5-text) stands for its members, one per task.
        let listed = value
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty() && !id.eq_ignore_ascii_case("none"))
            .flat_map(crate::family::expand);
        for id in listed {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl Settings {
    /// Reads every setting through `get` (the environment, Spin variables, a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, place: Place) -> Parsed<Self> {
        let r = Reader(get);
        let in_lambda = r.get("AWS_LAMBDA_RUNTIME_API").is_some();
        let lambda_concurrency = r
            .get("AWS_LAMBDA_MAX_CONCURRENCY")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1usize)
            .max(1);
        let (embedder, reranker) = match place {
            Place::Native => (
                "jinaai/jina-embeddings-v3",
                "jinaai/jina-reranker-v2-base-multilingual",
            ),
            Place::Component => ("/models/embedder", "none"),
        };
        let limits = Limits::default();
        let admission = Admission::default();
        let ms = |v: Option<usize>, default: Duration| {
            v.map_or(default, |ms| Duration::from_millis(ms as u64))
        };
        Ok(Settings {
            host: r.get("HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: r
                .parsed("PORT", |v| {
                    v.parse()
                        .map_err(|e: std::num::ParseIntError| e.to_string())
                })?
                .unwrap_or(8000),
            embeddings_models: r.models("EMBEDDINGS_MODEL_ID", embedder),
            reranker_models: r.models("RERANKER_MODEL_ID", reranker),
            model_cache_dir: r
                .get("MODEL_CACHE_DIR")
                .unwrap_or_else(|| if in_lambda { "/tmp/models" } else { "models" }.into()),
            quantization: r
                .parsed("ONNX_QUANTIZATION", |v| {
                    Quantization::parse(v).map_err(|e| e.to_string())
                })?
                .unwrap_or(Quantization::None),
            cuda: match r.flag("USE_CUDA")? {
                None => Cuda::Auto,
                Some(true) => Cuda::On,
                Some(false) => Cuda::Off,
            },
            intra_threads: r.number("ORT_INTRA_THREADS")?.map(|n| n.max(1)),
            spinning: r.flag("ORT_SPINNING")?,
            task_instructions: r.flag("TASK_INSTRUCTIONS")?.unwrap_or(true),
            default_task: r.get("DEFAULT_TASK"),
            max_batch_tokens: r.number("MAX_BATCH_TOKENS")?.map(|n| n.max(1)),
            max_batch_size: r.number("MAX_BATCH_SIZE")?.map(|n| n.max(1)),
            limits: Limits {
                max_body_bytes: r.number("MAX_BODY_BYTES")?.unwrap_or(limits.max_body_bytes),
                max_inputs: r.number("MAX_INPUTS")?.unwrap_or(limits.max_inputs),
                max_documents: r.number("MAX_DOCUMENTS")?.unwrap_or(limits.max_documents),
                max_embed_all_values: r
                    .number("MAX_EMBED_ALL_VALUES")?
                    .unwrap_or(limits.max_embed_all_values),
            },
            max_request_tokens: r
                .number("MAX_REQUEST_TOKENS")?
                .unwrap_or(MAX_REQUEST_TOKENS)
                .max(1),
            // One invocation at a time (classic Lambda) has nothing to batch with.
            dynamic_batching: r
                .flag("DYNAMIC_BATCHING")?
                .unwrap_or(!in_lambda || lambda_concurrency > 1),
            batch_wait: ms(r.number("BATCH_WAIT_MS")?, Duration::ZERO),
            api_key: r.get("API_KEY").map(ApiKey::new),
            cors: r
                .get("CORS_ALLOW_ORIGINS")
                .map_or_else(Cors::default, |v| Cors::parse(&v)),
            max_memory: r.parsed("MAX_MEMORY", parse_bytes)?,
            admission: Admission {
                max_running: r
                    .number("MAX_CONCURRENT_REQUESTS")?
                    .unwrap_or(admission.max_running)
                    .max(1),
                max_queue: r.number("MAX_QUEUE")?.unwrap_or(admission.max_queue),
                max_wait: ms(r.number("MAX_QUEUE_WAIT_MS")?, admission.max_wait),
            },
            body_timeout: ms(r.number("BODY_TIMEOUT_MS")?, Duration::from_secs(30)),
            request_timeout: ms(r.number("REQUEST_TIMEOUT_MS")?, Duration::from_secs(120)),
            shutdown_grace: ms(r.number("SHUTDOWN_GRACE_MS")?, Duration::from_secs(25)),
            in_lambda,
            lambda_memory_mb: r
                .get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .and_then(|v| v.trim().parse().ok()),
            lambda_concurrency,
            snap_start: r
                .get("AWS_LAMBDA_INITIALIZATION_TYPE")
                .is_some_and(|v| v.trim() == "snap-start"),
        })
    }

    /// The pass limits, `default` filling what is not set (the engine's own default:
    /// [`BatchLimits::default`], [`BatchLimits::on_one_thread`], [`BatchLimits::on_accelerator`]).
    pub fn batch(&self, default: BatchLimits) -> BatchLimits {
        BatchLimits {
            max_tokens: self.max_batch_tokens.unwrap_or(default.max_tokens),
            max_size: self.max_batch_size.unwrap_or(default.max_size),
        }
    }

    /// The pass limits for a model whose session runs on `device` (`"cuda"` or `"cpu"`).
    pub fn batch_on(&self, device: &str) -> BatchLimits {
        let default = BatchLimits::default();
        self.batch(if device == "cuda" {
            default.on_accelerator()
        } else {
            default
        })
    }

    /// The names and values of the settings a component sees, as `get` has them (what
    /// embedfn-host forwards to its guest).
    pub fn for_component(get: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        SETTINGS
            .iter()
            .filter(|s| s.scope == Scope::All)
            .filter_map(|s| Some((s.name.to_string(), get(s.name)?)))
            .collect()
    }
}

/// The settings table as Markdown (what `docs/configuration.md` holds between its markers).
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | Where | Meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let scope = match s.scope {
            Scope::All => "all",
            Scope::Native => "native",
        };
        out.push_str(&format!(
            "| `{}` | {} | {scope} | {} |\n",
            s.name, s.default, s.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests;
