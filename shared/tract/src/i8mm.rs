//! `I8MatMul`: `Y = X · (W · diag(S))` with `W` int8 kept int8 in memory, as tract ops.
//!
//! The kernel ([`crate::i8kernel`]) widens the weights to f32 in registers, one 4 × 8 block at a
//! time, and multiplies in f32 (simd128, fused multiply-add with `relaxed-simd`): the weights
//! stay int8 in memory and are never stored as f32. The column scales are applied to the sums:
//! the result differs from ONNX's `X · (f32(W) · S)` only by f32 rounding. The node may also
//! carry the bias `Add` and the GELU that followed the `MatMul` in the graph
//! ([`crate::fuse`] fuses them): the kernel applies them while the results are in registers.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, InferenceOp, InferenceResult, Solver,
    TensorProxy,
};

pub use crate::i8kernel::Epilogue;
pub use crate::i8kernel::Packed as I8Weights;

/// The typed op: one input `X [.., K]` (f32), output `[.., N]`.
#[derive(Debug, Clone)]
pub struct I8MatMul {
    w: Arc<I8Weights>,
    epilogue: Arc<Epilogue>,
}

impl PartialEq for I8MatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.w, &other.w) && self.epilogue == other.epilogue
    }
}

impl Eq for I8MatMul {}

impl Op for I8MatMul {
    fn name(&self) -> StaticName {
        "I8MatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for I8MatMul {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let x = x.cast_to::<f32>()?;
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&self.w.k()),
            "I8MatMul: input {shape:?}, weights {:?}",
            self.w
        );
        let m = x.len() / self.w.k();
        let mut out: TVec<usize> = shape.into();
        *out.last_mut().expect("rank checked") = self.w.n();
        // SAFETY: `matmul` writes every output (all rows, all panels and the tail columns)
        // before anything reads them; f32 has no invalid bit patterns.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out)? };
        {
            let xs = x.try_as_plain_ram()?;
            let mut ys = y.try_as_plain_ram_mut()?;
            self.w.matmul(
                xs.as_slice::<f32>()?,
                m,
                ys.as_slice_mut::<f32>()?,
                &self.epilogue,
            );
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for I8MatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(!shape.is_empty(), "I8MatMul on a scalar");
        *shape.last_mut().expect("not empty") = self.w.n().into();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().rev().skip(1).product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            rows * (self.w.k() * self.w.n())
        )))
    }

    as_op!();
}

/// The parsed node: wires its [`I8MatMul`] on its one input.
#[derive(Debug, Clone)]
struct I8MatMulExpansion(I8MatMul);

impl Expansion for I8MatMulExpansion {
    fn name(&self) -> StaticName {
        "I8MatMul".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        let n = self.0.w.n();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank.saturating_sub(1) {
                s.equals(&inputs[0].shape[axis], &outputs[0].shape[axis])?;
            }
            if rank > 0 {
                s.equals(&outputs[0].shape[rank - 1], n.to_dim())?;
            }
            Ok(())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), &[inputs[0]])
    }
}

/// The parser of [`crate::quant::I8_MATMUL`] nodes.
pub fn parse(
    _: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let key: String = node.get_attr("key")?;
    let w = crate::quant::weights(&key)
        .ok_or_else(|| format_err!("{}: no int8 weights registered as {key}", node.name))?;
    let bias = node
        .get_attr_opt_slice::<f32>(crate::quant::BIAS)?
        .map(<[f32]>::to_vec);
    if let Some(b) = &bias {
        ensure!(
            b.len() == w.n(),
            "{}: {} biases for {:?}",
            node.name,
            b.len(),
            w
        );
    }
    let gelu = node.get_attr_opt::<i64>(crate::quant::GELU)?.unwrap_or(0) != 0;
    let epilogue = Arc::new(Epilogue { bias, gelu });
    Ok((expand(I8MatMulExpansion(I8MatMul { w, epilogue })), vec![]))
}
