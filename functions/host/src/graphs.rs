//! The graphs the host serves, preloaded once by name from model directories and shared by
//! every store (a per-request `WasiNnCtx` gets a cheap clone of this registry).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use embedfn_core::files::read_model_dir;
use embedfn_core::{ModelKind, ModelSpec};
use wasmtime_wasi_nn::backend::BackendFromDir;
use wasmtime_wasi_nn::wit::ExecutionTarget;
use wasmtime_wasi_nn::{Graph, GraphRegistry};

/// Name → graph, shared.
#[derive(Clone, Default)]
pub struct Graphs(Arc<HashMap<String, Graph>>);

impl GraphRegistry for Graphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name)
    }

    fn get_mut(&mut self, _: &str) -> Option<&mut Graph> {
        None
    }
}

/// A model directory served as a graph: its name, where it is, and what kind of model it is
/// (from its `config.json`), which decides how the guest is told about it.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The graph's name (`load-by-name`), also the directory's name in the guest.
    pub name: String,
    /// On the host.
    pub dir: PathBuf,
    /// Embedder or cross-encoder.
    pub kind: ModelKind,
}

impl ModelDir {
    /// Reads the kind of the model in `dir`.
    pub fn new(name: String, dir: PathBuf) -> anyhow::Result<Self> {
        let files = read_model_dir(&dir)?;
        let kind = ModelSpec::from_files(&files)?.kind;
        Ok(Self { name, dir, kind })
    }

    /// Where the guest sees the directory.
    pub fn guest_path(&self) -> String {
        format!("/models/{}", self.name)
    }
}

/// Loads every model's graph with `backend`.
pub fn preload(models: &[ModelDir], backend: &mut dyn BackendFromDir) -> anyhow::Result<Graphs> {
    let mut graphs = HashMap::new();
    for m in models {
        let graph = backend
            .load_from_dir(&m.dir, ExecutionTarget::Cpu)
            .map_err(|e| anyhow::anyhow!("graph {} from {}: {e:?}", m.name, m.dir.display()))?;
        graphs.insert(m.name.clone(), graph);
    }
    Ok(Graphs(Arc::new(graphs)))
}

/// The name a directory is served under: its last segment.
pub fn dir_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
