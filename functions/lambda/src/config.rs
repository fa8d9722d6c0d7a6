//! Configuration from the environment, with the seeds' variable names and defaults.

use std::path::PathBuf;

use std::time::Duration;

use embedfn_core::batch::MAX_REQUEST_TOKENS;
use embedfn_core::dynamic::BatchingOptions;
use embedfn_core::memory::{default_limit, parse_bytes};
use embedfn_core::{ApiKey, BatchLimits, Limits, Quantization};

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

/// Everything the binary reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST` (default `0.0.0.0`).
    pub host: String,
    /// `PORT` (default 8000).
    pub port: u16,
    /// `EMBEDDINGS_MODEL_ID`: hub ids or local directories, comma-separated (the first is the
    /// default for requests that name no model); empty when set to `none`.
    pub embeddings_models: Vec<String>,
    /// `RERANKER_MODEL_ID`: the same for cross-encoders.
    pub reranker_models: Vec<String>,
    /// `MODEL_CACHE_DIR` (default `models`, or `/tmp/models` in Lambda, whose code directory
    /// is read-only): where hub downloads go.
    pub model_cache_dir: PathBuf,
    /// `ONNX_QUANTIZATION` (default `none`).
    pub quantization: Quantization,
    /// `USE_CUDA` (default: auto).
    pub cuda: Cuda,
    /// `ORT_INTRA_THREADS` (default: physical cores).
    pub intra_threads: usize,
    /// `TASK_INSTRUCTIONS` (default true): prepend the task's instruction to texts.
    pub task_instructions: bool,
    /// `DEFAULT_TASK` (default `text-matching` when the model has it).
    pub default_task: Option<String>,
    /// `MAX_BATCH_TOKENS`, `MAX_BATCH_SIZE`: limits per forward pass (see [`Config::batch_on`]).
    pub batch: BatchLimits,
    /// Whether `MAX_BATCH_SIZE` was set (else a model on CUDA gets the accelerator default).
    pub batch_size_set: bool,
    /// `MAX_BODY_BYTES`, `MAX_INPUTS`, `MAX_DOCUMENTS`.
    pub limits: Limits,
    /// `MAX_REQUEST_TOKENS`: tokens one request may run, all inputs together.
    pub max_request_tokens: usize,
    /// `DYNAMIC_BATCHING` (default true; off in Lambda, which runs one request at a time) and
    /// `BATCH_WAIT_MS` (default 0): batching of concurrent requests.
    pub batching: BatchingOptions,
    /// `API_KEY`: when set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// `MAX_MEMORY` (bytes; `2G`, `512M` accepted): the budget every forward pass is planned
    /// and admitted under. Default: the cgroup limit, else `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
    /// else physical memory, less 10 % headroom.
    pub max_memory: u64,
    /// Where `max_memory` came from (for the start-up log).
    pub max_memory_source: &'static str,
    /// `MAX_CONCURRENT_REQUESTS`, `MAX_QUEUE`, `MAX_QUEUE_WAIT_MS`: how many requests run at
    /// once, how many may wait, and for how long.
    pub admission: Admission,
}

/// The bounded request queue of the native server (and the wait for memory of every pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Requests that run at once (each holds a worker thread); `MAX_CONCURRENT_REQUESTS`.
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

/// A variable that is set but cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {why}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    why: String,
}

impl Config {
    /// The pass limits for a model whose session runs on `device` (`"cuda"` or `"cpu"`): an
    /// unset `MAX_BATCH_SIZE` on CUDA takes [`BatchLimits::on_accelerator`].
    pub fn batch_on(&self, device: &str) -> BatchLimits {
        if device == "cuda" && !self.batch_size_set {
            self.batch.on_accelerator()
        } else {
            self.batch
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let num = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            get(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError {
                        name,
                        value: v.clone(),
                        why: e.to_string(),
                    })
            })
        };
        let flag = |name: &'static str| -> Result<Option<bool>, ConfigError> {
            get(name).map_or(Ok(None), |v| match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError {
                    name,
                    value: v.clone(),
                    why: "expected true or false".into(),
                }),
            })
        };
        let models = |name: &str, default: &str| -> Vec<String> {
            let v = get(name).unwrap_or_else(|| default.to_string());
            let mut ids: Vec<String> = Vec::new();
            for id in v.split(',').map(str::trim) {
                if !id.is_empty()
                    && !id.eq_ignore_ascii_case("none")
                    && !ids.iter().any(|i| i == id)
                {
                    ids.push(id.to_string());
                }
            }
            ids
        };
        let quantization = get("ONNX_QUANTIZATION").unwrap_or_default();
        let port = num("PORT", 8000)?;
        let defaults = Limits::default();
        let batch = BatchLimits {
            max_tokens: num("MAX_BATCH_TOKENS", BatchLimits::default().max_tokens)?.max(1),
            max_size: num("MAX_BATCH_SIZE", BatchLimits::default().max_size)?.max(1),
        };
        let batch_size_set = get("MAX_BATCH_SIZE").is_some();
        let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        let (max_memory, max_memory_source) = match get("MAX_MEMORY") {
            Some(v) => (
                parse_bytes(&v).map_err(|why| ConfigError {
                    name: "MAX_MEMORY",
                    value: v.clone(),
                    why,
                })?,
                "MAX_MEMORY",
            ),
            None => {
                let lambda_mb =
                    get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.trim().parse().ok());
                detected_memory(cgroup_limit(), lambda_mb, physical_memory())
            }
        };
        let admission = Admission {
            max_running: num("MAX_CONCURRENT_REQUESTS", Admission::default().max_running)?.max(1),
            max_queue: num("MAX_QUEUE", Admission::default().max_queue)?,
            max_wait: Duration::from_millis(num(
                "MAX_QUEUE_WAIT_MS",
                Admission::default().max_wait.as_millis() as usize,
            )? as u64),
        };
        Ok(Config {
            host: get("HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: u16::try_from(port).map_err(|e| ConfigError {
                name: "PORT",
                value: port.to_string(),
                why: e.to_string(),
            })?,
            embeddings_models: models("EMBEDDINGS_MODEL_ID", "jinaai/jina-embeddings-v3"),
            reranker_models: models(
                "RERANKER_MODEL_ID",
                "jinaai/jina-reranker-v2-base-multilingual",
            ),
            model_cache_dir: get("MODEL_CACHE_DIR")
                .unwrap_or_else(|| if in_lambda { "/tmp/models" } else { "models" }.into())
                .into(),
            quantization: Quantization::parse(&quantization).map_err(|e| ConfigError {
                name: "ONNX_QUANTIZATION",
                value: quantization.clone(),
                why: e.to_string(),
            })?,
            cuda: match flag("USE_CUDA")? {
                None => Cuda::Auto,
                Some(true) => Cuda::On,
                Some(false) => Cuda::Off,
            },
            intra_threads: num("ORT_INTRA_THREADS", physical_cores())?.max(1),
            task_instructions: flag("TASK_INSTRUCTIONS")?.unwrap_or(true),
            default_task: get("DEFAULT_TASK"),
            batch,
            limits: Limits {
                max_body_bytes: num("MAX_BODY_BYTES", defaults.max_body_bytes)?,
                max_inputs: num("MAX_INPUTS", defaults.max_inputs)?,
                max_documents: num("MAX_DOCUMENTS", defaults.max_documents)?,
            },
            max_request_tokens: num("MAX_REQUEST_TOKENS", MAX_REQUEST_TOKENS)?.max(1),
            batching: BatchingOptions {
                enabled: flag("DYNAMIC_BATCHING")?.unwrap_or(!in_lambda),
                limits: batch,
                wait: Duration::from_millis(num("BATCH_WAIT_MS", 0)? as u64),
            },
            batch_size_set,
            api_key: get("API_KEY").map(ApiKey::new),
            max_memory,
            max_memory_source,
            admission,
        })
    }
}

/// The default budget and where it came from (see [`default_limit`]).
fn detected_memory(
    cgroup: Option<u64>,
    lambda_mb: Option<u64>,
    physical: Option<u64>,
) -> (u64, &'static str) {
    let limit = default_limit(cgroup, lambda_mb, physical);
    let source = if default_limit(cgroup, None, physical) != default_limit(None, None, physical) {
        "the cgroup memory limit"
    } else if lambda_mb.is_some() {
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
    } else if physical.is_some() {
        "physical memory"
    } else {
        "a 4 GiB guess"
    };
    (limit, source)
}

/// The cgroup memory limit: v2 `memory.max`, else v1 `memory.limit_in_bytes`.
fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| parse_cgroup(&std::fs::read_to_string(p).ok()?))
}

/// A cgroup limit file's value; `max` (no limit) is none.
fn parse_cgroup(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn physical_memory() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// A `kB` field of `/proc/meminfo` or `/proc/<pid>/status`, in bytes.
pub fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// This process's resident memory now (`VmRSS`), in bytes.
pub fn resident_memory() -> Option<u64> {
    parse_meminfo(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// Physical cores from `/proc/cpuinfo` (distinct physical id / core id pairs); logical CPUs
/// where that cannot be read. ONNX Runtime gains nothing from hyper-threads.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, usize::from);
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = "";
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => physical = v,
            (Some("core id"), Some(v)) => {
                cores.insert((physical, v));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let c = config(&[]).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8000));
        assert_eq!(c.embeddings_models, ["jinaai/jina-embeddings-v3"]);
        assert_eq!(
            c.reranker_models,
            ["jinaai/jina-reranker-v2-base-multilingual"]
        );
        assert_eq!(c.quantization, Quantization::None);
        assert_eq!(c.cuda, Cuda::Auto);
        assert!(c.task_instructions);
        assert_eq!(c.model_cache_dir, PathBuf::from("models"));
        assert!(c.batching.enabled && c.api_key.is_none());
        let lambda = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap();
        assert_eq!(lambda.model_cache_dir, PathBuf::from("/tmp/models"));
        assert!(!lambda.batching.enabled);
    }

    #[test]
    fn cuda_takes_bigger_passes_unless_the_size_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.batch_on("cpu").max_size, 16);
        assert_eq!(
            c.batch_on("cuda").max_size,
            BatchLimits::ACCELERATOR_MAX_SIZE
        );
        assert_eq!(c.batch_on("cuda").max_tokens, c.batch.max_tokens);
        let set = config(&[("MAX_BATCH_SIZE", "8")]).unwrap();
        assert_eq!(
            (set.batch_on("cpu").max_size, set.batch_on("cuda").max_size),
            (8, 8)
        );
    }

    #[test]
    fn none_disables_a_model_and_bad_values_are_errors() {
        let c = config(&[("RERANKER_MODEL_ID", "none"), ("USE_CUDA", "false")]).unwrap();
        assert!(c.reranker_models.is_empty());
        assert_eq!(c.cuda, Cuda::Off);
        let c = config(&[("EMBEDDINGS_MODEL_ID", " a/b , ./c,a/b,, ")]).unwrap();
        assert_eq!(c.embeddings_models, ["a/b", "./c"]);
        assert!(config(&[("PORT", "http")]).is_err());
        assert!(config(&[("ONNX_QUANTIZATION", "q3")]).is_err());
        assert!(config(&[("USE_CUDA", "maybe")]).is_err());
    }

    #[test]
    fn memory_budget_and_queue() {
        let c = config(&[
            ("MAX_MEMORY", "768M"),
            ("MAX_QUEUE", "4"),
            ("MAX_QUEUE_WAIT_MS", "250"),
            ("MAX_CONCURRENT_REQUESTS", "2"),
        ])
        .unwrap();
        assert_eq!(
            (c.max_memory, c.max_memory_source),
            (768 << 20, "MAX_MEMORY")
        );
        assert_eq!(
            c.admission,
            Admission {
                max_running: 2,
                max_queue: 4,
                max_wait: Duration::from_millis(250),
            }
        );
        assert!(config(&[("MAX_MEMORY", "lots")]).is_err());
        let d = config(&[]).unwrap();
        assert_eq!(d.admission, Admission::default());
        assert!(d.max_memory > 0);
        let g = 1u64 << 30;
        assert_eq!(
            detected_memory(Some(2 * g), Some(4096), Some(16 * g)),
            ((1.8 * g as f64) as u64, "the cgroup memory limit")
        );
        assert_eq!(
            detected_memory(None, Some(3008), Some(16 * g)).1,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
        );
        assert_eq!(
            detected_memory(parse_cgroup("max\n"), None, Some(16 * g)),
            ((14.4 * g as f64) as u64, "physical memory")
        );
        assert_eq!(parse_cgroup("1073741824\n"), Some(g));
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo(meminfo, "MemTotal:"), Some(24_576_000 * 1024));
        assert!(resident_memory().is_some_and(|r| r > 0));
    }
}
