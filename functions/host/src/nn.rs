//! A `wasi:nn` backend on the workspace's one `ort`, for `wasmtime-wasi-nn`'s backend traits
//! (its own `onnx` feature pins an older `ort` and takes only f32 inputs).
//!
//! Each graph is one ONNX Runtime session, opened once with the native binary's settings
//! (threads, CUDA, quantization file: [`embedfn_lambda::ort_backend::open_session`]) and shared
//! by every instance and request behind a mutex. Every tensor type of the WIT is accepted as
//! input and produced as output. Inputs are matched to the graph's declared inputs by name;
//! inputs the graph does not declare are ignored (a BERT guest always sends `token_type_ids`,
//! XLM-R graphs do not take it), integer inputs are narrowed to int32 where the graph wants it,
//! and a `[1]` tensor feeds a scalar input. Outputs come back in the graph's order.

use std::path::Path;
use std::sync::{Arc, Mutex};

use embedfn_core::files::onnx_path;
use embedfn_core::Quantization;
use embedfn_lambda::ort_backend::{open_session, SessionOptions};
use half::{bf16, f16};
use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, TensorType};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

fn backend_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!("{e}"))
}

/// One declared graph input.
#[derive(Debug, Clone)]
struct Input {
    name: String,
    ty: TensorElementType,
    rank: usize,
}

/// A loaded graph: its session and declared inputs and outputs.
pub struct OrtGraph {
    session: Mutex<Session>,
    inputs: Vec<Input>,
    outputs: Vec<String>,
}

impl OrtGraph {
    /// Opens `onnx` with the process's session settings.
    pub fn open(env: &Environment, onnx: &Path, options: SessionOptions) -> anyhow::Result<Self> {
        let (session, device) = open_session(env, onnx, options)?;
        tracing::info!(onnx = %onnx.display(), device, "wasi:nn graph loaded");
        let inputs = session
            .inputs()
            .iter()
            .map(|i| Input {
                name: i.name().to_string(),
                ty: i
                    .dtype()
                    .tensor_type()
                    .unwrap_or(TensorElementType::Float32),
                rank: i.dtype().tensor_shape().map_or(0, |s| s.len()),
            })
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Self {
            session: Mutex::new(session),
            inputs,
            outputs,
        })
    }
}

/// The graph as registered: an `Arc` so execution contexts can reach the shared session.
pub struct SharedGraph(pub Arc<OrtGraph>);

impl BackendGraph for SharedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context: Box<dyn BackendExecutionContext> = Box::new(OrtContext {
            graph: self.0.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        });
        Ok(context.into())
    }
}

impl SharedGraph {
    /// As a `wasmtime-wasi-nn` graph.
    pub fn into_graph(self) -> Graph {
        let graph: Box<dyn BackendGraph> = Box::new(self);
        graph.into()
    }
}

/// One execution context: inputs set by the guest, outputs of the last compute.
struct OrtContext {
    graph: Arc<OrtGraph>,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
}

impl OrtContext {
    fn run(&mut self) -> Result<(), BackendError> {
        let mut feeds: Vec<(String, SessionInputValue<'static>)> = Vec::new();
        for declared in &self.graph.inputs {
            let tensor = self
                .inputs
                .iter()
                .find(|(name, _)| *name == declared.name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    backend_err(format!("graph input '{}' was not set", declared.name))
                })?;
            feeds.push((declared.name.clone(), to_ort(tensor, declared)?.into()));
        }
        let mut session = self.graph.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(feeds).map_err(backend_err)?;
        self.outputs = self
            .graph
            .outputs
            .iter()
            .map(|name| Ok((name.clone(), from_ort(&outputs[name.as_str()])?)))
            .collect::<Result<_, BackendError>>()?;
        Ok(())
    }
}

impl BackendExecutionContext for OrtContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        let name = match id {
            Id::Name(n) => n,
            Id::Index(i) => self
                .graph
                .inputs
                .get(i as usize)
                .map(|d| d.name.clone())
                .ok_or_else(|| backend_err(format!("no input {i}")))?,
        };
        self.inputs.retain(|(n, _)| *n != name);
        self.inputs.push((name, tensor.clone()));
        Ok(())
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let named = inputs.is_some();
        for t in inputs.unwrap_or_default() {
            self.set_input(Id::Name(t.name), &t.tensor)?;
        }
        self.run()?;
        Ok(named.then(|| {
            self.outputs
                .iter()
                .map(|(name, tensor)| NamedTensor {
                    name: name.clone(),
                    tensor: tensor.clone(),
                })
                .collect()
        }))
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        let found = match &id {
            Id::Index(i) => self.outputs.get(*i as usize),
            Id::Name(n) => self.outputs.iter().find(|(name, _)| name == n),
        };
        found
            .map(|(_, t)| t.clone())
            .ok_or_else(|| backend_err(format!("no output {id:?}")))
    }
}

/// Reads little-endian elements of `N` bytes.
fn elements<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// A guest tensor as the value the graph declares (integer inputs narrowed, `[1]` → scalar).
fn to_ort(t: &Tensor, declared: &Input) -> Result<DynValue, BackendError> {
    let mut shape: Vec<usize> = t.dimensions.iter().map(|&d| d as usize).collect();
    if declared.rank == 0 && shape == [1] {
        shape.clear();
    }
    let value = |r: ort::Result<DynValue>| r.map_err(backend_err);
    match (t.ty, declared.ty) {
        (TensorType::I64, TensorElementType::Int32) => {
            let v: Vec<i32> = elements(&t.data, i64::from_le_bytes)
                .into_iter()
                .map(|x| i32::try_from(x).map_err(backend_err))
                .collect::<Result<_, _>>()?;
            value(ort::value::Tensor::from_array((shape, v)).map(Into::into))
        }
        (TensorType::I64, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, i64::from_le_bytes)))
                .map(Into::into),
        ),
        (TensorType::I32, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, i32::from_le_bytes)))
                .map(Into::into),
        ),
        (TensorType::U8, _) => {
            value(ort::value::Tensor::from_array((shape, t.data.clone())).map(Into::into))
        }
        (TensorType::Fp32, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, f32::from_le_bytes)))
                .map(Into::into),
        ),
        (TensorType::Fp64, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, f64::from_le_bytes)))
                .map(Into::into),
        ),
        (TensorType::Fp16, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, f16::from_le_bytes)))
                .map(Into::into),
        ),
        (TensorType::Bf16, _) => value(
            ort::value::Tensor::from_array((shape, elements(&t.data, bf16::from_le_bytes)))
                .map(Into::into),
        ),
    }
}

/// An output value as a WIT tensor of the same element type.
fn from_ort(v: &DynValue) -> Result<Tensor, BackendError> {
    fn pack<T: ort::value::PrimitiveTensorElementType + Copy, const N: usize>(
        v: &DynValue,
        ty: TensorType,
        bytes: fn(T) -> [u8; N],
    ) -> Result<Tensor, BackendError> {
        let (shape, data) = v.try_extract_tensor::<T>().map_err(backend_err)?;
        Ok(Tensor::new(
            shape.iter().map(|&d| d.max(0) as u32).collect(),
            ty,
            data.iter().flat_map(|&x| bytes(x)).collect(),
        ))
    }
    match v.dtype() {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => pack(v, TensorType::Fp32, f32::to_le_bytes),
            TensorElementType::Float16 => pack(v, TensorType::Fp16, f16::to_le_bytes),
            TensorElementType::Bfloat16 => pack(v, TensorType::Bf16, bf16::to_le_bytes),
            TensorElementType::Float64 => pack(v, TensorType::Fp64, f64::to_le_bytes),
            TensorElementType::Int64 => pack(v, TensorType::I64, i64::to_le_bytes),
            TensorElementType::Int32 => pack(v, TensorType::I32, i32::to_le_bytes),
            TensorElementType::Uint8 => pack(v, TensorType::U8, u8::to_le_bytes),
            other => Err(BackendError::UnsupportedTensorType(format!("{other:?}"))),
        },
        other => Err(BackendError::UnsupportedTensorType(format!("{other:?}"))),
    }
}

/// The backend `wasmtime-wasi-nn` holds for the ONNX encoding. Graphs are preloaded by name
/// from model directories ([`crate::graphs`]) with the native binary's settings; `load` from
/// bytes is not offered (a guest names a preloaded graph with `load-by-name`).
pub struct OrtNn {
    env: Arc<Environment>,
    options: SessionOptions,
    quantization: Quantization,
}

impl OrtNn {
    /// A backend on `env` with the process's session options and quantization file choice.
    pub fn new(env: Arc<Environment>, options: SessionOptions, quantization: Quantization) -> Self {
        Self {
            env,
            options,
            quantization,
        }
    }
}

impl BackendInner for OrtNn {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(&mut self, _: &[&[u8]], _: ExecutionTarget) -> Result<Graph, BackendError> {
        Err(backend_err(
            "embedfn-host serves the graphs preloaded with --graph NAME=DIR: use load-by-name",
        ))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        Some(self)
    }
}

impl BackendFromDir for OrtNn {
    fn load_from_dir(&mut self, dir: &Path, _: ExecutionTarget) -> Result<Graph, BackendError> {
        let onnx = onnx_path(dir, self.quantization).map_err(backend_err)?;
        let graph = OrtGraph::open(&self.env, &onnx, self.options).map_err(backend_err)?;
        Ok(SharedGraph(Arc::new(graph)).into_graph())
    }
}
