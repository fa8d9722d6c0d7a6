//! Configuration from the environment, with the seeds' variable names and defaults.

use std::path::PathBuf;

use std::time::Duration;

use embedfn_core::batch::MAX_REQUEST_TOKENS;
use embedfn_core::dynamic::BatchingOptions;
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
    /// `MAX_BATCH_TOKENS`, `MAX_BATCH_SIZE`: limits per forward pass.
    pub batch: BatchLimits,
    /// `MAX_BODY_BYTES`, `MAX_INPUTS`, `MAX_DOCUMENTS`.
    pub limits: Limits,
    /// `MAX_REQUEST_TOKENS`: tokens one request may run, all inputs together.
    pub max_request_tokens: usize,
    /// `DYNAMIC_BATCHING` (default true; off in Lambda, which runs one request at a time) and
    /// `BATCH_WAIT_MS` (default 0): batching of concurrent requests.
    pub batching: BatchingOptions,
    /// `API_KEY`: when set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
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
        let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
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
            api_key: get("API_KEY").map(ApiKey::new),
        })
    }
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
}
