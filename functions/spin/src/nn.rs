//! The core's [`Backend`] on the standard `wasi:nn` interface.
//!
//! Graphs are obtained with `load-by-name`, so the host keeps each model loaded once and shares
//! it across instances; a graph handle is a resource of this instance, looked up lazily and kept
//! for the instance's life (never during pre-initialisation, whose resources do not survive the
//! snapshot). Inputs go out as int64 tensors named as in the ONNX exports (`input_ids`,
//! `attention_mask`, `token_type_ids`, and `task_id` for models with task adapters); the host
//! feeds the ones its graph declares. Output 0 comes back as float32 or float16.

use std::cell::RefCell;
use std::collections::HashMap;

use embedfn_core::{Backend, Batch, Error, Result, Tensor};

use crate::bindings::wasi::nn::errors::Error as NnError;
use crate::bindings::wasi::nn::graph::{load_by_name, Graph};
use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};

thread_local! {
    /// This instance's graph handles, by name.
    static GRAPHS: RefCell<HashMap<String, Graph>> = RefCell::new(HashMap::new());
}

/// A model graph the host has preloaded under `name`.
#[derive(Debug, Clone)]
pub struct NnBackend {
    name: String,
    output: Option<String>,
}

impl NnBackend {
    /// The graph the host knows as `name`; its output named `output` is read (else its first).
    pub fn new(name: impl Into<String>, output: Option<&str>) -> Self {
        Self {
            name: name.into(),
            output: output.map(str::to_string),
        }
    }
}

fn nn_err(what: &str, e: NnError) -> Error {
    Error::Backend(format!("wasi:nn {what}: {:?}: {}", e.code(), e.data()))
}

fn int64(data: &[i64], dims: &[usize]) -> NnTensor {
    let bytes = data
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    let dims = dims.iter().map(|&d| d as u32).collect::<Vec<u32>>();
    NnTensor::new(&dims, TensorType::I64, &bytes)
}

/// Output bytes (little-endian) as f32.
fn floats(ty: TensorType, bytes: &[u8]) -> Result<Vec<f32>> {
    match ty {
        TensorType::Fp32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        TensorType::Fp16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(Error::Backend(format!(
            "wasi:nn output is {other:?}; embedfn reads float32 or float16"
        ))),
    }
}

impl Backend for NnBackend {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        // Every input a text model may take; the host feeds the ones its graph declares.
        let inputs: Vec<(String, NnTensor)> = batch
            .named_inputs()
            .into_iter()
            .map(|(name, data, dims)| (name.to_string(), int64(data, &dims)))
            .collect();
        let outputs = GRAPHS.with(|graphs| {
            let mut graphs = graphs.borrow_mut();
            if !graphs.contains_key(&self.name) {
                let graph = load_by_name(&self.name).map_err(|e| nn_err("load-by-name", e))?;
                graphs.insert(self.name.clone(), graph);
            }
            let context = graphs[&self.name]
                .init_execution_context()
                .map_err(|e| nn_err("init-execution-context", e))?;
            context.compute(inputs).map_err(|e| nn_err("compute", e))
        })?;
        let wanted = |name: &String| self.output.as_ref().is_none_or(|w| w == name);
        let (_, output) = outputs
            .into_iter()
            .find(|(name, _)| wanted(name))
            .ok_or_else(|| Error::Backend("wasi:nn compute returned no such output".into()))?;
        Ok(Tensor {
            shape: output.dimensions().iter().map(|&d| d as usize).collect(),
            data: floats(output.ty(), &output.data())?.into(),
        })
    }
}
