//! Finding and loading the ONNX Runtime shared library (`ort` is built with `load-dynamic`).
//!
//! Search order: `ORT_DYLIB_PATH`; then the cache that `scripts/fetch-onnxruntime.sh` fills
//! (`$EMBEDFN_CACHE` or `~/.cache/embedfn`, `onnxruntime/<version>/`); then next to the binary
//! (`lib/` beside it, as the container image lays it out); then `/opt/lib`, where a Lambda
//! layer's files land.

use std::path::{Path, PathBuf};

use ort::environment::Environment;

/// The ONNX Runtime version the project fetches and tests with.
pub const ORT_VERSION: &str = "1.31.1";

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No library was found anywhere.
    #[error("ONNX Runtime library not found (looked in: {0}); run scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH")]
    NotFound(String),
    /// The library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {why}")]
    Load {
        /// The file tried.
        path: PathBuf,
        /// ort's error.
        why: String,
    },
}

/// The project cache directory (`$EMBEDFN_CACHE`, else `$XDG_CACHE_HOME/embedfn`, else
/// `~/.cache/embedfn`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMBEDFN_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("embedfn")
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    let lib = format!("libonnxruntime.so.{ORT_VERSION}");
    out.push(cache_dir().join("onnxruntime").join(ORT_VERSION).join(&lib));
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("lib").join(&lib));
        out.push(dir.join("lib").join("libonnxruntime.so"));
    }
    out.push(Path::new("/opt/lib").join(&lib));
    out
}

/// Loads ONNX Runtime once for the process and creates its environment. Never panics: a
/// missing or wrong library is an error the caller reports.
pub fn init() -> Result<(PathBuf, Environment), RuntimeError> {
    let tried = candidates();
    let path = tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        RuntimeError::NotFound(
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::Load {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let env = builder
        .with_name("embedfn")
        .build()
        .map_err(|e| RuntimeError::Load {
            path: path.clone(),
            why: e.to_string(),
        })?;
    Ok((path, env))
}
