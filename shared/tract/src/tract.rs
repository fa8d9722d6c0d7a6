//! The core's [`Backend`] inside the component, on the pure-Rust ONNX engine tract: the build
//! that needs no inference from the host, so it runs under stock `spin up` and `wasmtime serve`.
//!
//! The model is parsed and optimised once (at pre-initialisation, so a Wizer snapshot holds the
//! ready plan) with symbolic `[B, S]` inputs, and the plan is reused by every call. Two rewrites
//! happen at load:
//! - `CumSum` over int64 (XLM-R position ids) would run on tract's symbolic-integer type, which
//!   its `CumSum` does not take: our parser casts to int64 and back around it.
//! - Weight-only int8 exports dequantize their tables in the graph: [`crate::quant`] rewrites
//!   them so that the weights stay int8 in memory ([`crate::i8mm`]'s kernel widens them on
//!   the fly, and only the gathered rows of a vocabulary are converted). Other constant
//!   `Cast`s (float16 tables) are folded once here (tract folds only up to 4 MiB of growth).

use std::path::Path;
use std::sync::Arc;

use embedfn_core::{Backend, Batch, Error, Feed, Result, Tensor};

use crate::reader::{read_file, FileBuf};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{ModelProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::CumSum as CoreCumSum;
use tract_onnx::tract_core::ops::cast::{cast, Cast};
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, Factoid, InferenceOp,
    InferenceResult, Solver, StaticName, TensorProxy,
};

fn tract_err(e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("tract: {e}"))
}

/// A model's optimised plan.
pub struct TractBackend {
    plan: Arc<TypedRunnableModel>,
    feeds: Vec<(Feed, DatumType)>,
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractBackend")
            .field("feeds", &self.feeds)
            .finish()
    }
}

impl TractBackend {
    /// Parses and optimises `onnx` (its external data beside it is read too); the graph's
    /// output named `output` is the result (else its first).
    pub fn load(onnx: &Path, output: Option<&str>) -> Result<Self> {
        let mut framework = tract_onnx::onnx().with_ignore_value_info(true);
        framework.op_register.insert("CumSum", cumsum);
        framework
            .op_register
            .insert(crate::quant::I8_MATMUL, crate::i8mm::parse);
        framework
            .op_register
            .insert(crate::quant::I8_GATHER, crate::i8gather::parse);
        framework
            .op_register
            .insert(crate::layernorm::LAYER_NORM, crate::layernorm::parse);
        let mut model = {
            // Decoded here (not by tract) from the file in pieces (see `crate::reader`).
            let mut proto = {
                let io = |e: std::io::Error| Error::Model(format!("{}: {e}", onnx.display()));
                let mut file = FileBuf::open(onnx).map_err(io)?;
                let decoded = <ModelProto as prost::Message>::decode(&mut file);
                file.finish().map_err(io)?;
                decoded.map_err(tract_err)?
            };
            inline_external_data(&mut proto, onnx.parent().unwrap_or(Path::new(".")))?;
            if let Some(graph) = proto.graph.as_mut() {
                crate::quant::rewrite(graph);
                crate::layernorm::rewrite(graph);
            }
            let parsed = framework.parse(&proto, None).map(|p| p.model);
            crate::quant::clear_weights();
            parsed.map_err(tract_err)?
        };
        let (b, s) = (model.sym("B"), model.sym("S"));
        let mut feeds = Vec::new();
        let outlets = model.input_outlets().map_err(tract_err)?.to_vec();
        for (ix, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let declared = model.input_fact(ix).map_err(tract_err)?.clone();
            let dims: Vec<Option<usize>> = declared
                .shape
                .dims()
                .map(|d| {
                    d.concretize()
                        .and_then(|d| d.as_i64())
                        .and_then(|d| usize::try_from(d).ok())
                })
                .collect();
            let feed = Feed::for_input(&name, &dims)?;
            let dt = match (feed, declared.datum_type.concretize()) {
                (Feed::EmptyPast { .. }, Some(dt @ (DatumType::F32 | DatumType::F16))) => dt,
                (Feed::EmptyPast { .. }, other) => {
                    return Err(Error::Model(format!(
                        "graph input '{name}' has type {other:?}; expected float32 or float16"
                    )))
                }
                _ => DatumType::I64,
            };
            let fact = match feed {
                // `task_id` keeps the graph's rank: a scalar or `[1]`.
                Feed::TaskId(rank) => i64::fact(vec![1usize; rank]),
                // An empty KV cache: no past positions.
                Feed::EmptyPast { heads, head_dim } => TypedFact::dt_shape(
                    dt,
                    [
                        TDim::from(b.clone()),
                        heads.into(),
                        0.into(),
                        head_dim.into(),
                    ],
                ),
                _ => i64::fact([TDim::from(b.clone()), TDim::from(s.clone())]),
            };
            model.set_input_fact(ix, fact.into()).map_err(tract_err)?;
            feeds.push((feed, dt));
        }
        if let Some(name) = output {
            model.select_outputs_by_name([name]).map_err(tract_err)?;
        }
        let mut typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(tract_err)?;
        fold_constant_casts(&mut typed).map_err(tract_err)?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(tract_err)?;
        Ok(Self { plan, feeds })
    }
}

/// Reads external weights (`model.onnx_data`) into the initializers: tract resolves them with
/// `canonicalize`, which WASI does not offer.
fn inline_external_data(proto: &mut ModelProto, dir: &Path) -> Result<()> {
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(());
    };
    let mut files: std::collections::HashMap<String, Vec<u8>> = Default::default();
    for t in &mut graph.initializer {
        if t.external_data.is_empty() {
            continue;
        }
        let field = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = field("location")
            .filter(|l| !l.contains("..") && !l.starts_with('/'))
            .ok_or_else(|| Error::Model(format!("{}: bad external data location", t.name)))?;
        let number = |key| field(key).map(|v| v.parse::<usize>()).transpose();
        let bad = |e| Error::Model(format!("{}: external data: {e}", t.name));
        let offset = number("offset").map_err(bad)?.unwrap_or(0);
        let length = number("length").map_err(bad)?;
        if !files.contains_key(&location) {
            let bytes = read_file(&dir.join(&location))
                .map_err(|e| Error::Model(format!("{}: {e}", dir.join(&location).display())))?;
            files.insert(location.clone(), bytes);
        }
        let file = &files[&location];
        let end = length.map_or(file.len(), |l| offset + l);
        t.raw_data = file
            .get(offset..end)
            .ok_or_else(|| Error::Model(format!("{}: external data out of range", t.name)))?
            .to_vec();
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// Replaces every `Cast` of a constant by the cast constant, until none is left; int8 tables
/// stay int8 (see [`crate::quant`]).
fn fold_constant_casts(model: &mut TypedModel) -> TractResult<()> {
    loop {
        let mut patch = None;
        for id in model.eval_order()? {
            let node = model.node(id);
            let Some(op) = node.op_as::<Cast>() else {
                continue;
            };
            let Some(k) = model.outlet_fact(node.inputs[0])?.konst.clone() else {
                continue;
            };
            if matches!(k.datum_type(), DatumType::I8 | DatumType::U8) {
                continue;
            }
            let folded = k.cast_to_dt(op.to)?.into_owned();
            let mut p = TypedModelPatch::default();
            let wire = p.add_const(format!("{}.folded", node.name), folded)?;
            p.shunt_outside(model, OutletId::new(id, 0), wire)?;
            patch = Some(p);
            break;
        }
        match patch {
            Some(p) => p.apply(model)?,
            None => break,
        }
    }
    model.prop_consts()
}

/// `CumSum` that casts tract's symbolic integers to int64 and back around the core op.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct CumSumI64 {
    reverse: bool,
    exclusive: bool,
}

impl Expansion for CumSumI64 {
    fn name(&self) -> StaticName {
        "CumSumI64".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&inputs[1].rank, 0)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let axis = model
            .outlet_fact(inputs[1])?
            .konst
            .as_ref()
            .ok_or_else(|| TractError::msg("CumSum axis must be a constant"))?
            .cast_to_scalar::<i64>()?;
        let fact = model.outlet_fact(inputs[0])?.clone();
        let axis = if axis < 0 {
            axis + fact.rank() as i64
        } else {
            axis
        } as usize;
        let symbolic = fact.datum_type == TDim::datum_type();
        let mut x = inputs[0];
        if symbolic {
            x = model.wire_node(format!("{prefix}.i64"), cast(i64::datum_type()), &[x])?[0];
        }
        let op = CoreCumSum {
            axis,
            exclusive: self.exclusive,
            reverse: self.reverse,
        };
        let mut y = model.wire_node(prefix, op, &[x])?[0];
        if symbolic {
            y = model.wire_node(format!("{prefix}.tdim"), cast(TDim::datum_type()), &[y])?[0];
        }
        Ok(tvec!(y))
    }
}

fn cumsum(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = CumSumI64 {
        reverse: node.get_attr_opt::<i64>("reverse")? == Some(1),
        exclusive: node.get_attr_opt::<i64>("exclusive")? == Some(1),
    };
    Ok((expand(op), vec![]))
}

fn int64(data: &[i64], shape: &[usize]) -> Result<TValue> {
    Ok(tract_onnx::prelude::Tensor::from_shape(shape, data)
        .map_err(tract_err)?
        .into())
}

impl Backend for TractBackend {
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let inputs = self
            .feeds
            .iter()
            .map(|&(feed, dt)| {
                let (data, shape) = batch.feed(feed)?;
                if feed.is_float() {
                    return tract_onnx::prelude::Tensor::zero_dt(dt, &shape)
                        .map(TValue::from)
                        .map_err(tract_err);
                }
                int64(data, &shape)
            })
            .collect::<Result<TVec<TValue>>>()?;
        let outputs = if let Some(how) = crate::profile::setting() {
            crate::profile::run(&self.plan, inputs, how == "nodes")
        } else {
            self.plan.run(inputs)
        }
        .map_err(tract_err)?;
        let out = outputs[0].cast_to::<f32>().map_err(tract_err)?;
        let data = out
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            .map_err(tract_err)?;
        Ok(Tensor {
            shape: out.shape().to_vec(),
            data: data.into(),
        })
    }
}
