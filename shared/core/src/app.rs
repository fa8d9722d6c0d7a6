//! What every handler may use: the served models, the request limits, the API key and the
//! metrics. Adapters build an [`App`] once (from [`crate::settings::Settings`]) and hand it to
//! [`crate::router::route`] with each request.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::cors::Cors;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Request limits (all configurable by the adapters' environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Inputs per embedding request.
    pub max_inputs: usize,
    /// Documents per rerank request.
    pub max_documents: usize,
    /// Numbers (tokens × width) one TEI `/embed_all` answer may hold.
    pub max_embed_all_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_inputs: 2048,
            max_documents: 1000,
            // 4 Mi numbers: ≈ 40 MB of JSON (2,730 tokens of a 1536-wide model).
            max_embed_all_values: 4 << 20,
        }
    }
}

/// Everything a handler may use: the models, the limits, the metrics.
#[derive(Debug)]
pub struct App<B> {
    /// The served models.
    pub models: Registry<B>,
    /// Request limits.
    pub limits: Limits,
    /// Reported by `/api/version`.
    pub version: String,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// Served at `/metrics`; shared with whatever runs forward passes.
    pub metrics: Arc<Metrics>,
    /// The origins whose browser requests are allowed (`CORS_ALLOW_ORIGINS`; none by default).
    pub cors: Cors,
}

impl<B> App<B> {
    /// An app with default limits, no API key and this crate's version.
    pub fn new(models: Registry<B>) -> Self {
        Self {
            models,
            limits: Limits::default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_key: None,
            metrics: Arc::default(),
            cors: Cors::default(),
        }
    }
}

/// The API key clients must send. Compared in constant time; `Debug` never shows it, so it
/// cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps the configured key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Whether `token` is the key (time independent of where they differ).
    pub fn matches(&self, token: &str) -> bool {
        token.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The one path that needs no API key (load balancers and orchestrators probe it).
pub const OPEN: &str = "/health";

/// Checks `Authorization: Bearer <key>` against `key` (when there is one) in constant time;
/// `path` is the route table's path of the request ([`OPEN`] needs no key).
pub fn authorize(key: Option<&ApiKey>, path: &str, headers: &[(&str, &str)]) -> Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    if path == OPEN {
        return Ok(());
    }
    let given = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        Some(token) if key.matches(token) => Ok(()),
        Some(_) => Err(Error::Unauthorized("invalid API key".into())),
        None => Err(Error::Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'".into(),
        )),
    }
}
