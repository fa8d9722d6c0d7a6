//! A `wasi:nn` backend on the workspace's one `ort`, for `wasmtime-wasi-nn`'s backend traits
//! (its own `onnx` feature pins an older `ort` and takes only f32 inputs).
//!
//! Each graph is one ONNX Runtime session, opened once with the native binary's settings
//! (threads, CUDA, quantization file: [`embedfn_ort::ort_backend::open_session`]) and shared
//! by every instance and request behind a mutex. Every tensor type of the WIT is accepted as
//! input and produced as output. Inputs are matched to the graph's declared inputs by name;
//! inputs the graph does not declare are ignored (a BERT guest always sends `token_type_ids`,
//! XLM-R graphs do not take it), integer inputs are narrowed to int32 where the graph wants it,
//! and a `[1]` tensor feeds a scalar input. Outputs come back in the graph's order.

use std::path::Path;
use std::sync::{Arc, Mutex};

use embedfn_core::dynamic::{Batcher, BatchingOptions};
use embedfn_core::files::{onnx_path, read_graph};
use embedfn_core::{Backend as _, Batch, Feed, Padding, Quantization, Tensor as CoreTensor};
use embedfn_ort::ort_backend::{open_session, run_options, session_file, SessionOptions};
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

/// A session with its declared inputs and outputs: runs any named tensors (every WIT type).
pub struct OrtGraph {
    session: Mutex<Session>,
    inputs: Vec<Input>,
    outputs: Vec<String>,
    /// Where the session runs (`cpu`, `cuda`).
    device: &'static str,
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
            device,
        })
    }
}

/// A text model's padded batch through [`OrtGraph::run`], output 0 as f32: what the core's
/// dynamic batcher drives.
struct TextEngine(Arc<OrtGraph>);

impl embedfn_core::Backend for TextEngine {
    fn forward(&self, b: &Batch) -> embedfn_core::Result<CoreTensor> {
        let inputs: Vec<(String, Tensor)> = b
            .named_inputs()
            .into_iter()
            .map(|(name, data, dims)| {
                let dims = dims.iter().map(|&d| d as u32).collect();
                let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name.to_string(), Tensor::new(dims, TensorType::I64, bytes))
            })
            .collect();
        let outputs = self
            .0
            .run(&inputs, b.release)
            .map_err(|e| embedfn_core::Error::Backend(format!("{e:?}")))?;
        let (_, out) = outputs
            .into_iter()
            .next()
            .ok_or_else(|| embedfn_core::Error::Backend("graph has no outputs".into()))?;
        let data = match out.ty {
            TensorType::Fp32 => elements(&out.data, f32::from_le_bytes),
            TensorType::Fp16 => elements(&out.data, f16::from_le_bytes)
                .into_iter()
                .map(f16::to_f32)
                .collect(),
            other => {
                return Err(embedfn_core::Error::Backend(format!(
                    "output 0 is {other:?}, not a float"
                )))
            }
        };
        Ok(CoreTensor {
            shape: out.dimensions.iter().map(|&d| d as usize).collect(),
            data: data.into(),
        })
    }
}

/// The graph as registered: the shared session, and the dynamic batcher that groups the text
/// batches of concurrent instances into shared forward passes (as the native server does).
pub struct SharedGraph {
    graph: Arc<OrtGraph>,
    batcher: Arc<Batcher<TextEngine>>,
    pad_id: i64,
}

impl BackendGraph for SharedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context: Box<dyn BackendExecutionContext> = Box::new(OrtContext {
            graph: self.graph.clone(),
            batcher: self.batcher.clone(),
            pad_id: self.pad_id,
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
    batcher: Arc<Batcher<TextEngine>>,
    pad_id: i64,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
}

impl OrtContext {
    /// A text model's inputs go through the batcher (output 0 comes back, as f32); anything
    /// else runs directly.
    fn run(&mut self) -> Result<(), BackendError> {
        self.outputs = match text_batch(&self.inputs, self.pad_id) {
            Some(batch) => {
                let t = self.batcher.forward(&batch).map_err(backend_err)?;
                let name = self.graph.outputs.first().cloned().unwrap_or_default();
                let dims = t.shape.iter().map(|&d| d as u32).collect();
                let bytes = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
                vec![(name, Tensor::new(dims, TensorType::Fp32, bytes))]
            }
            // No estimate of an arbitrary graph's pass: its memory goes back.
            None => self.graph.run(&self.inputs, true)?,
        };
        Ok(())
    }
}

/// The guest's inputs as a core batch, when they are exactly a text model's: int64
/// `input_ids` and `attention_mask` of one `[batch, seq]` shape, optional `token_type_ids` of
/// that shape and a one-element `task_id`. The guest is not trusted: a shape whose element
/// count overflows, or data of another length than the shape says, is no batch.
fn text_batch(inputs: &[(String, Tensor)], pad_id: i64) -> Option<Batch> {
    let get = |name: &str| inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let ints =
        |t: &Tensor| (t.ty == TensorType::I64).then(|| elements(&t.data, i64::from_le_bytes));
    if inputs.iter().any(|(n, _)| Feed::for_input(n, &[]).is_err()) {
        return None;
    }
    let ids = get(Feed::InputIds.name())?;
    let [rows, seq] = ids.dimensions[..] else {
        return None;
    };
    let n = usize::try_from(rows)
        .ok()?
        .checked_mul(usize::try_from(seq).ok()?)?;
    let ints = |t: &Tensor| ints(t).filter(|v| v.len() == n);
    let mask = get(Feed::AttentionMask.name()).filter(|t| t.dimensions == ids.dimensions)?;
    let types = match get(Feed::TokenTypeIds.name()) {
        Some(t) if t.dimensions == ids.dimensions => ints(t)?,
        Some(_) => return None,
        None => vec![0; n],
    };
    let task_id = match get(Feed::TaskId(1).name()) {
        Some(t) if t.ty == TensorType::I64 => match elements(&t.data, i64::from_le_bytes)[..] {
            [id] => Some(id),
            _ => return None,
        },
        Some(_) => return None,
        None => None,
    };
    let attention_mask = ints(mask)?;
    let seq = usize::try_from(seq).ok()?;
    // The guest padded by the model's side: a row that starts with padding and ends with a
    // real token says it was the left.
    let left = attention_mask
        .chunks(seq.max(1))
        .any(|r| r.first() == Some(&0) && r.last() == Some(&1));
    Some(Batch {
        input_ids: ints(ids)?,
        position_ids: Batch::positions_of(&attention_mask, seq),
        attention_mask,
        token_type_ids: types,
        batch: rows as usize,
        seq,
        task_id,
        padding: Padding { id: pad_id, left },
        release: false,
    })
}

impl OrtGraph {
    /// Runs named tensors: each declared input from the tensor of its name; `release` gives
    /// the pass's memory back when it ends ([`run_options`]).
    fn run(
        &self,
        inputs: &[(String, Tensor)],
        release: bool,
    ) -> Result<Vec<(String, Tensor)>, BackendError> {
        let mut feeds: Vec<(String, SessionInputValue<'static>)> = Vec::new();
        for declared in &self.inputs {
            let tensor = inputs
                .iter()
                .find(|(name, _)| *name == declared.name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    backend_err(format!("graph input '{}' was not set", declared.name))
                })?;
            feeds.push((declared.name.clone(), to_ort(tensor, declared)?.into()));
        }
        let options = run_options(release, self.device).map_err(backend_err)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run_with_options(feeds, &options)
            .map_err(backend_err)?;
        self.outputs
            .iter()
            .map(|name| Ok((name.clone(), from_ort(&outputs[name.as_str()])?)))
            .collect()
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
    settings: NnSettings,
}

/// How graphs are opened and batched: the native server's settings.
#[derive(Debug, Clone, Copy)]
pub struct NnSettings {
    /// Threads and CUDA.
    pub session: SessionOptions,
    /// Which ONNX file of a model directory.
    pub quantization: Quantization,
    /// Dynamic batching across instances.
    pub batching: BatchingOptions,
}

impl OrtNn {
    /// A backend on `env` with the process's settings.
    pub fn new(env: Arc<Environment>, settings: NnSettings) -> Self {
        Self { env, settings }
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
        let s = self.settings;
        let onnx = onnx_path(dir, s.quantization).map_err(backend_err)?;
        let graph = Arc::new(OrtGraph::open(&self.env, &onnx, s.session).map_err(backend_err)?);
        let engine = TextEngine(graph.clone());
        // A batch-dependent graph (dynamic quantization) never shares a pass across instances.
        let facts = read_graph(&session_file(&onnx))
            .map_err(backend_err)?
            .facts();
        let batching = BatchingOptions {
            limits: s.batching.limits.for_graph(&facts),
            ..s.batching
        };
        // The host serves no /metrics of its own (each instance answers for itself).
        let batcher = Batcher::new(engine, batching, Arc::default()).map_err(backend_err)?;
        let shared = SharedGraph {
            graph,
            batcher: Arc::new(batcher),
            pad_id: pad_token_id(dir),
        };
        Ok(shared.into_graph())
    }
}

/// `pad_token_id` from the model's `config.json` (BERT 0, XLM-R 1): merged batches are padded
/// with it, as position ids may be derived from it.
fn pad_token_id(dir: &Path) -> i64 {
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c.get("pad_token_id")?.as_i64())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int64(v: &[i64], dims: &[u32]) -> Tensor {
        Tensor::new(
            dims.to_vec(),
            TensorType::I64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    #[test]
    fn text_inputs_become_a_batch_and_others_do_not() {
        let ids = ("input_ids".to_string(), int64(&[5, 6, 7, 8], &[2, 2]));
        let mask = ("attention_mask".to_string(), int64(&[1, 1, 1, 0], &[2, 2]));
        let task = ("task_id".to_string(), int64(&[3], &[1]));
        let b = text_batch(&[ids.clone(), mask.clone(), task], 1).unwrap();
        assert_eq!(
            (b.batch, b.seq, b.task_id, b.padding.id),
            (2, 2, Some(3), 1)
        );
        assert_eq!(b.token_type_ids, vec![0; 4]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 0]);
        let other = ("pixel_values".to_string(), int64(&[0], &[1]));
        assert!(text_batch(&[ids.clone(), mask.clone(), other], 0).is_none());
        let floats = (
            "input_ids".to_string(),
            Tensor::new(vec![1, 1], TensorType::Fp32, vec![0; 4]),
        );
        assert!(text_batch(&[floats, mask], 0).is_none());
    }
}
