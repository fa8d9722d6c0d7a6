//! What one instance of the component gets: its store data (WASI, `wasi:http`, `wasi:nn`), its
//! environment and its model directories, and the linker that provides them.

use std::sync::Arc;

use embedfn_core::ModelKind;
use ort::environment::Environment;
use std::future::Future;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};
use wasmtime_wasi_nn::wit::WasiNnView;
use wasmtime_wasi_nn::{Backend, Registry};

use crate::graphs::{Graphs, ModelDir};
use crate::nn::{NnSettings, OrtNn};

/// `wasi:http` hooks: the component makes no outgoing requests, so any is denied.
#[derive(Default)]
struct NoOutgoing;

impl WasiHttpHooks for NoOutgoing {
    fn send_request(
        &mut self,
        _: http::Request<WasiBody>,
        _: Option<RequestOptions>,
        _: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

/// The store data of one instance.
pub struct Host {
    hooks: NoOutgoing,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    nn: wasmtime_wasi_nn::wit::WasiNnCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Everything shared by all instances: the models (mounted read-only under `/models/<name>`),
/// the guest's environment, and the preloaded graphs.
pub struct Guest {
    models: Vec<ModelDir>,
    env: Vec<(String, String)>,
    graphs: Graphs,
    ort: Option<(Arc<Environment>, NnSettings)>,
}

impl Guest {
    /// The guest's view of `models`: `EMBEDDINGS_MODEL_ID` / `RERANKER_MODEL_ID` point at their
    /// mounts (`none` when absent), then `extra` variables.
    pub fn new(
        models: Vec<ModelDir>,
        extra: Vec<(String, String)>,
        graphs: Graphs,
        ort: Option<(Arc<Environment>, NnSettings)>,
    ) -> Self {
        let mount = |kind| {
            models
                .iter()
                .find(|m| m.kind == kind)
                .map_or_else(|| "none".to_string(), ModelDir::guest_path)
        };
        let mut env = vec![
            (
                "EMBEDDINGS_MODEL_ID".to_string(),
                mount(ModelKind::Embedding),
            ),
            (
                "RERANKER_MODEL_ID".to_string(),
                mount(ModelKind::CrossEncoder),
            ),
        ];
        env.extend(extra);
        Self {
            models,
            env,
            graphs,
            ort,
        }
    }

    /// Fresh store data for one instance.
    pub fn store_data(&self) -> anyhow::Result<Host> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr().envs(&self.env);
        for m in &self.models {
            wasi.preopened_dir(&m.dir, m.guest_path(), FsPerms::ReadOnly)?;
        }
        let backends: Vec<Backend> = self
            .ort
            .iter()
            .map(|(env, settings)| Backend::from(OrtNn::new(env.clone(), *settings)))
            .collect();
        Ok(Host {
            hooks: NoOutgoing,
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            nn: wasmtime_wasi_nn::wit::WasiNnCtx::new(
                backends,
                Registry::from(self.graphs.clone()),
            ),
        })
    }
}

/// WASI, `wasi:http` and, when `nn`, `wasi:nn` for the component.
pub fn linker(engine: &Engine, nn: bool) -> anyhow::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if nn {
        wasmtime_wasi_nn::wit::add_to_linker(&mut linker, |h: &mut Host| {
            WasiNnView::new(&mut h.table, &mut h.nn)
        })?;
    }
    Ok(linker)
}
