//! The models a server holds, and how a request's `model` name finds one.
//!
//! A request may name a model by its id (`jinaai/jina-embeddings-v3`), by the last path segment
//! (`jina-embeddings-v3`), with an Ollama tag (`…:latest`), or with a task suffix
//! (`jina-embeddings-v3-query` → `retrieval.query`). A missing or empty name means the served one.

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::rerank::Reranker;
use crate::spec::{ModelSpec, Quantization};

/// Model-name suffixes that choose a task, as the seed service accepts them.
pub const TASK_SUFFIXES: [(&str, &str); 5] = [
    ("-query", "retrieval.query"),
    ("-passage", "retrieval.passage"),
    ("-separation", "separation"),
    ("-classification", "classification"),
    ("-text-matching", "text-matching"),
];

/// What the listing routes (`/api/tags`, `/v1/models`, …) say about a served model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelInfo {
    /// The id it was loaded by (hub id or directory).
    pub name: String,
    /// Bytes of the ONNX file(s).
    pub size: u64,
    /// RFC 3339 time of the ONNX file.
    pub modified_at: String,
    /// A stable content digest (hex).
    pub digest: String,
    /// Which ONNX variant runs.
    pub quantization: Quantization,
}

/// A model with what is reported about it.
#[derive(Debug)]
pub struct Served<M> {
    /// Reported facts.
    pub info: ModelInfo,
    /// The model.
    pub model: M,
}

/// The models one server holds: an embedder, a reranker, or both.
#[derive(Debug)]
pub struct Registry<B> {
    /// The embedding model, if served.
    pub embedder: Option<Served<Embedder<B>>>,
    /// The cross-encoder, if served.
    pub reranker: Option<Served<Reranker<B>>>,
}

impl<B: crate::Backend> Registry<B> {
    /// Every served model: (info, spec, true when it embeds).
    pub fn list(&self) -> Vec<(&ModelInfo, &ModelSpec, bool)> {
        let e = self
            .embedder
            .iter()
            .map(|s| (&s.info, s.model.spec(), true));
        let r = self
            .reranker
            .iter()
            .map(|s| (&s.info, s.model.spec(), false));
        e.chain(r).collect()
    }

    /// The embedder a request names, and the task its name's suffix chooses.
    pub fn embedder(
        &self,
        requested: Option<&str>,
    ) -> Result<(&Served<Embedder<B>>, Option<&'static str>)> {
        let served = self.embedder.as_ref().ok_or_else(|| {
            Error::ModelNotFound(
                "this server has no embedding model (EMBEDDINGS_MODEL_ID=none)".into(),
            )
        })?;
        match requested.filter(|r| !r.trim().is_empty()) {
            None => Ok((served, None)),
            Some(r) => {
                match match_name(&served.info.name, r, !served.model.spec().tasks.is_empty()) {
                    Some(task) => Ok((served, task)),
                    None => Err(self.not_found(r)),
                }
            }
        }
    }

    /// The reranker a request names.
    pub fn reranker(&self, requested: Option<&str>) -> Result<&Served<Reranker<B>>> {
        let served = self.reranker.as_ref().ok_or_else(|| {
            Error::ModelNotFound(
                "this server has no reranker model (RERANKER_MODEL_ID=none)".into(),
            )
        })?;
        match requested.filter(|r| !r.trim().is_empty()) {
            Some(r) if match_name(&served.info.name, r, false).is_none() => Err(self.not_found(r)),
            _ => Ok(served),
        }
    }

    /// The spec and info of any served model by name (for `/api/show`).
    pub fn find(&self, requested: &str) -> Result<(&ModelInfo, &ModelSpec, bool)> {
        self.list()
            .into_iter()
            .find(|(info, spec, _)| {
                match_name(&info.name, requested, !spec.tasks.is_empty()).is_some()
            })
            .ok_or_else(|| self.not_found(requested))
    }

    fn not_found(&self, requested: &str) -> Error {
        let names: Vec<String> = self
            .list()
            .iter()
            .map(|(info, _, embeds)| {
                format!(
                    "'{}' ({})",
                    info.name,
                    if *embeds { "embedding" } else { "rerank" }
                )
            })
            .collect();
        Error::ModelNotFound(format!(
            "model '{requested}' not found; this server has {}",
            names.join(", ")
        ))
    }
}

/// Does `requested` name the model served as `served`? `Some(task)` if so, with the task its
/// suffix chooses (only when the model has tasks).
pub fn match_name(served: &str, requested: &str, has_tasks: bool) -> Option<Option<&'static str>> {
    let base = |s: &str| -> String {
        let s = s.trim().trim_end_matches('/');
        let s = s.rsplit('/').next().unwrap_or(s);
        s.split(':').next().unwrap_or(s).to_string()
    };
    let (served, requested) = (base(served), base(requested));
    if requested == served {
        return Some(None);
    }
    if !has_tasks {
        return None;
    }
    TASK_SUFFIXES.iter().find_map(|(suffix, task)| {
        (requested.strip_suffix(suffix) == Some(served.as_str())).then_some(Some(*task))
    })
}

#[cfg(test)]
mod tests {
    use super::match_name;

    #[test]
    fn names_match_by_last_segment_and_tag() {
        let id = "jinaai/jina-embeddings-v3";
        assert_eq!(
            match_name(id, "jinaai/jina-embeddings-v3", true),
            Some(None)
        );
        assert_eq!(
            match_name(id, "jina-embeddings-v3:latest", true),
            Some(None)
        );
        assert_eq!(match_name("/models/minilm/", "minilm", false), Some(None));
        assert_eq!(match_name(id, "bge-m3", true), None);
    }

    #[test]
    fn suffix_chooses_task() {
        let id = "jinaai/jina-embeddings-v3";
        assert_eq!(
            match_name(id, "jinaai/jina-embeddings-v3-query", true),
            Some(Some("retrieval.query"))
        );
        assert_eq!(
            match_name(id, "jina-embeddings-v3-text-matching", true),
            Some(Some("text-matching"))
        );
        assert_eq!(match_name(id, "jina-embeddings-v3-query", false), None);
    }
}
