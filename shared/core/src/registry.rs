//! The models a server holds, and how a request's `model` name finds one.
//!
//! A request may name a model by its id (`jinaai/jina-embeddings-v3`), by the last path segment
//! (`jina-embeddings-v3`), with an Ollama tag (`…:latest`), or with a task suffix
//! (`jina-embeddings-v3-query` → `retrieval.query`). A server may hold several embedders and
//! several rerankers (`EMBEDDINGS_MODEL_ID=a,b`); a missing or empty name means the first of the
//! kind asked for.

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::onnx_graph::WeightStats;
use crate::rerank::Reranker;
use crate::spec::{ModelSpec, Quantization};

/// Model-name suffixes that choose a task (`jina-embeddings-v3:retrieval.query`, …).
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
    /// Which ONNX variant runs (the `ONNX_QUANTIZATION` choice).
    pub quantization: Quantization,
    /// What the loaded graph's weights are, counted by the adapter at load (`None`: unknown).
    pub weights: Option<WeightStats>,
}

impl ModelInfo {
    /// Ollama's `quantization_level`: from the counted weights, else from the
    /// `ONNX_QUANTIZATION` choice.
    pub fn quantization_level(&self) -> &'static str {
        self.weights
            .as_ref()
            .and_then(crate::onnx_graph::quantization_label)
            .unwrap_or_else(|| self.quantization.label())
    }

    /// Ollama's `parameter_size` (`22.7M`): the counted weights, else an estimate from the
    /// file size and the bytes per weight of the `ONNX_QUANTIZATION` choice.
    pub fn parameter_size(&self) -> String {
        use crate::spec::Quantization as Q;
        let counted = self.weights.as_ref().map_or(0, |w| w.parameters);
        let parameters = if counted > 0 {
            counted
        } else {
            let bytes_per = match self.quantization {
                Q::None => 4.0,
                Q::Fp16 => 2.0,
                Q::Int8 | Q::Uint8 | Q::Quantized => 1.0,
                Q::Q4 | Q::Bnb4 => 0.5,
            };
            (self.size as f64 / bytes_per) as u64
        };
        crate::onnx_graph::parameter_size(parameters)
    }
}

/// A model with what is reported about it.
#[derive(Debug)]
pub struct Served<M> {
    /// Reported facts.
    pub info: ModelInfo,
    /// The model.
    pub model: M,
}

/// The models one server holds: embedders, rerankers, or both; the first of each kind is the
/// default for requests that name no model.
#[derive(Debug)]
pub struct Registry<B> {
    /// The embedding models, in configured order.
    pub embedders: Vec<Served<Embedder<B>>>,
    /// The cross-encoders, in configured order.
    pub rerankers: Vec<Served<Reranker<B>>>,
}

impl<B> Registry<B> {
    /// A registry of at most one model of each kind (adapters that serve one of each).
    pub fn single(
        embedder: Option<Served<Embedder<B>>>,
        reranker: Option<Served<Reranker<B>>>,
    ) -> Self {
        Self {
            embedders: embedder.into_iter().collect(),
            rerankers: reranker.into_iter().collect(),
        }
    }
}

impl<B: crate::Backend> Registry<B> {
    /// Runs every model once at a few shapes (one short text, a pass of several longer ones,
    /// a rerank pair), so that what engines allocate or compile on first use is done: before a
    /// snapshot (Lambda SnapStart) it then lives in the snapshot. Returns the texts run.
    pub fn warm_up(&self) -> Result<usize> {
        let short = vec![crate::embed::Input::Text("warm-up".into())];
        let long: Vec<crate::embed::Input> = (0..4)
            .map(|i| crate::embed::Input::Text(format!("warm-up {i} ").repeat(24)))
            .collect();
        let mut texts = 0;
        for served in &self.embedders {
            let params = crate::embed::EmbedParams::default();
            for inputs in [&short, &long] {
                served.model.embed(inputs, &params)?;
                texts += inputs.len();
            }
        }
        for served in &self.rerankers {
            served.model.rerank(
                "warm-up",
                &["a short document", &"a longer one ".repeat(24)],
                None,
            )?;
            texts += 2;
        }
        Ok(texts)
    }

    /// Every served model: (info, spec, true when it embeds), embedders first.
    pub fn list(&self) -> Vec<(&ModelInfo, &ModelSpec, bool)> {
        let e = self
            .embedders
            .iter()
            .map(|s| (&s.info, s.model.spec(), true));
        let r = self
            .rerankers
            .iter()
            .map(|s| (&s.info, s.model.spec(), false));
        e.chain(r).collect()
    }

    /// The embedder a request names (the first one when it names none), and the task its
    /// name's suffix chooses.
    pub fn embedder(
        &self,
        requested: Option<&str>,
    ) -> Result<(&Served<Embedder<B>>, Option<&'static str>)> {
        let first = self.embedders.first().ok_or_else(|| {
            Error::ModelNotFound(
                "this server has no embedding model (EMBEDDINGS_MODEL_ID=none)".into(),
            )
        })?;
        let Some(r) = requested.filter(|r| !r.trim().is_empty()) else {
            return Ok((first, None));
        };
        self.embedders
            .iter()
            .find_map(|s| {
                match_name(&s.info.name, r, !s.model.spec().tasks.is_empty()).map(|t| (s, t))
            })
            .ok_or_else(|| self.not_found(r))
    }

    /// The embedder and task for a request's `model`, `task` (or prompt name) and `input_type`:
    /// the task is the request's, else the model's task or prompt for the `input_type`
    /// ([`Embedder::task_for_input_type`]), else the one the model name's suffix chooses.
    /// A request that names a family ([`crate::family`]), or no model on a server whose
    /// default is a family member, is served by the member of its task.
    pub fn embedder_for(
        &self,
        requested: Option<&str>,
        task: Option<String>,
        input_type: Option<&str>,
    ) -> Result<(&Served<Embedder<B>>, Option<String>)> {
        use crate::family;
        if let Some((family, member)) =
            self.family_member(requested, task.as_deref().or(input_type))?
        {
            // The prompt role (`query` / `document`) the task or input type asks of the member.
            let role = [task.as_deref(), input_type]
                .into_iter()
                .flatten()
                .find_map(|w| family::route(family, w).and_then(|(_, role)| role));
            let served = self
                .embedders
                .iter()
                .find(|s| family::member(&s.info.name) == Some((family, member)))
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "task '{member}' is served by {}-{member}, which this server does not \
                         load (EMBEDDINGS_MODEL_ID)",
                        family.name
                    ))
                })?;
            let task = role
                .map(|r| served.model.task_for_input_type(r))
                .transpose()?
                .flatten();
            return Ok((served, task));
        }
        let (served, suffix_task) = self.embedder(requested)?;
        let role = input_type
            .map(|t| served.model.task_for_input_type(t))
            .transpose()?
            .flatten();
        Ok((served, task.or(role).or(suffix_task.map(str::to_string))))
    }

    /// The family member a request goes to when it names a family, or no model while the
    /// default embedder is a member: the member of `wish` (a task or input type), else the
    /// first loaded member. `None` when the request is not a family's.
    fn family_member(
        &self,
        requested: Option<&str>,
        wish: Option<&str>,
    ) -> Result<Option<(&'static crate::family::Family, &'static str)>> {
        use crate::family;
        let requested = requested.filter(|r| !r.trim().is_empty());
        let family = match requested {
            Some(r) => family::named(r),
            None => self
                .embedders
                .first()
                .and_then(|s| family::member(&s.info.name))
                .map(|(f, _)| f),
        };
        let Some(family) = family else {
            return Ok(None);
        };
        // The first of its members this server loads (none: the request is not a family's).
        let Some(first) = self
            .embedders
            .iter()
            .filter_map(|s| family::member(&s.info.name))
            .find_map(|(f, t)| (f == family).then_some(t))
        else {
            return Ok(None);
        };
        match wish {
            None => Ok(Some((family, first))),
            Some(w) => match family::route(family, w) {
                Some((member, _)) => Ok(Some((family, member))),
                None => Err(Error::bad_request(format!(
                    "task '{w}' is not one of {}'s: {} (or query / document, as task or \
                     input_type)",
                    family.name,
                    family.tasks.join(", ")
                ))),
            },
        }
    }

    /// The reranker a request names (the first one when it names none).
    pub fn reranker(&self, requested: Option<&str>) -> Result<&Served<Reranker<B>>> {
        let first = self.rerankers.first().ok_or_else(|| {
            Error::ModelNotFound(
                "this server has no reranker model (RERANKER_MODEL_ID=none)".into(),
            )
        })?;
        let Some(r) = requested.filter(|r| !r.trim().is_empty()) else {
            return Ok(first);
        };
        self.rerankers
            .iter()
            .find(|s| match_name(&s.info.name, r, false).is_some())
            .ok_or_else(|| self.not_found(r))
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
    let base = |s: &str| crate::family::base_name(s).to_string();
    // Case-insensitive: Ollama-style names are lower case, hub ids are not
    // (`all-minilm-l6-v2`, as Spin names it, is `sentence-transformers/all-MiniLM-L6-v2`).
    let (served, requested) = (
        base(served).to_ascii_lowercase(),
        base(requested).to_ascii_lowercase(),
    );
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
        assert_eq!(
            match_name(
                "sentence-transformers/all-MiniLM-L6-v2",
                "all-minilm-l6-v2",
                false
            ),
            Some(None)
        );
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
