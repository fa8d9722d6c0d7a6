//! `LayerNorm`: ONNX `LayerNormalization` over the last axis as one tract op.
//!
//! tract imports `LayerNormalization` as five ops (a sum, a scale, a subtraction, an RMS
//! normalisation and a multiply-add), each a pass over the activations with a tensor of its
//! own: ≈ 4 % of MiniLM's forward pass in the component. This op normalises each row in place
//! while it is in cache: its mean, the mean square of its deviations (two passes, so no
//! cancellation), then `(x - mean) / √(var + ε) · scale + bias`. [`rewrite`] renames the
//! graph's `LayerNormalization` nodes that it can take (normalised over the last axis, only the
//! first output used); any other stays tract's.

use tract_onnx::pb::GraphProto;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, InferenceOp, InferenceResult, Solver,
    TensorProxy,
};

/// The op type [`rewrite`] gives the nodes it hands to this op.
pub const LAYER_NORM: &str = "EmbedfnLayerNorm";

/// Renames each `LayerNormalization` over the last axis (`axis` -1, the default) whose `Mean`
/// and `InvStdDev` outputs are unused to [`LAYER_NORM`]; its inputs and `epsilon` stay.
pub fn rewrite(graph: &mut GraphProto) {
    for n in &mut graph.node {
        let axis = n
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(-1, |a| a.i);
        let one_output = n.output.iter().skip(1).all(String::is_empty);
        let onnx = n.domain.is_empty() || n.domain == "ai.onnx";
        if n.op_type == "LayerNormalization" && onnx && axis == -1 && one_output {
            n.op_type = LAYER_NORM.into();
        }
    }
}

/// The typed op: inputs `X [.., C]`, `scale [C]` and optionally `bias [C]` (f32).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    epsilon: f32,
}

impl PartialEq for LayerNorm {
    fn eq(&self, other: &Self) -> bool {
        self.epsilon.to_bits() == other.epsilon.to_bits()
    }
}

impl Eq for LayerNorm {}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "LayerNorm".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LayerNorm {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut y = inputs[0].clone().into_tensor();
        ensure!(
            y.datum_type() == f32::datum_type(),
            "LayerNorm on {:?}",
            y.datum_type()
        );
        let c = y.shape().last().copied().unwrap_or(1);
        let scale = inputs[1].cast_to::<f32>()?;
        let bias = inputs.get(2).map(|b| b.cast_to::<f32>()).transpose()?;
        let (scale, bias) = (
            scale.try_as_plain_ram()?,
            bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?,
        );
        let scale = scale.as_slice::<f32>()?;
        let bias = bias.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        ensure!(
            scale.len() == c && bias.is_none_or(|b| b.len() == c),
            "LayerNorm over {c} values with {} scales and {:?} biases",
            scale.len(),
            bias.map(<[f32]>::len)
        );
        if c > 0 {
            let mut ys = y.try_as_plain_ram_mut()?;
            for row in ys.as_slice_mut::<f32>()?.chunks_exact_mut(c) {
                normalize(row, scale, bias, self.epsilon);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// `row = (row - mean) / √(var + ε) · scale (+ bias)`.
fn normalize(row: &mut [f32], scale: &[f32], bias: Option<&[f32]>, epsilon: f32) {
    let n = row.len() as f32;
    let mean = sum_of(row, |v| v) / n;
    let var = sum_of(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + epsilon).sqrt();
    match bias {
        Some(bias) => {
            for ((v, s), b) in row.iter_mut().zip(scale).zip(bias) {
                *v = (*v - mean) * inv * s + b;
            }
        }
        None => {
            for (v, s) in row.iter_mut().zip(scale) {
                *v = (*v - mean) * inv * s;
            }
        }
    }
}

/// `Σ f(v)` in 8 interleaved partial sums, which LLVM keeps in two `f32x4` registers (one
/// running sum would be a chain of dependent adds).
fn sum_of(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut parts = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| f(*v)).sum();
    for chunk in chunks {
        for (p, v) in parts.iter_mut().zip(chunk) {
            *p += f(*v);
        }
    }
    parts.iter().sum::<f32>() + rest
}

/// The parsed node: wires its [`LayerNorm`] on its inputs.
#[derive(Debug, Clone)]
struct LayerNormExpansion(LayerNorm);

impl Expansion for LayerNormExpansion {
    fn name(&self) -> StaticName {
        "LayerNorm".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        if inputs.len() != 2 {
            check_input_arity(inputs, 3)?;
        }
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// The parser of [`LAYER_NORM`] nodes.
pub fn parse(
    _: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr_opt::<f32>("epsilon")?.unwrap_or(1e-5);
    Ok((expand(LayerNormExpansion(LayerNorm { epsilon })), vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, NodeProto};

    /// `normalize` against the definition in f64, with and without a bias, on rows whose
    /// length is and is not a multiple of 8 and whose values sit far from zero (where
    /// `E[x²] - E[x]²` would cancel).
    #[test]
    fn normalizes_as_the_definition() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for c in [1, 7, 384, 1027] {
            let x: Vec<f32> = (0..c).map(|_| 300.0 + next()).collect();
            let scale: Vec<f32> = (0..c).map(|_| next()).collect();
            let bias: Vec<f32> = (0..c).map(|_| next()).collect();
            for with_bias in [true, false] {
                let mut y = x.clone();
                normalize(&mut y, &scale, with_bias.then_some(&bias[..]), 1e-5);
                let n = c as f64;
                let mean = x.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
                let var = x
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                for i in 0..c {
                    let mut want =
                        (f64::from(x[i]) - mean) / (var + 1e-5).sqrt() * f64::from(scale[i]);
                    if with_bias {
                        want += f64::from(bias[i]);
                    }
                    let got = f64::from(y[i]);
                    assert!(
                        (got - want).abs() <= 2e-4 * want.abs().max(1.0),
                        "c={c} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    fn layer_norm(attributes: Vec<AttributeProto>, outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: "LayerNormalization".into(),
            input: vec!["x".into(), "g".into(), "b".into()],
            output: outputs.iter().map(|o| o.to_string()).collect(),
            attribute: attributes,
            ..Default::default()
        }
    }

    #[test]
    fn rewrite_takes_only_the_last_axis_with_one_output() {
        let axis = |i| AttributeProto {
            name: "axis".into(),
            i,
            ..Default::default()
        };
        let mut graph = GraphProto {
            node: vec![
                layer_norm(vec![], &["y"]),
                layer_norm(vec![axis(-1)], &["y", "", ""]),
                layer_norm(vec![axis(1)], &["y"]),
                layer_norm(vec![], &["y", "mean"]),
            ],
            ..Default::default()
        };
        rewrite(&mut graph);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                LAYER_NORM,
                LAYER_NORM,
                "LayerNormalization",
                "LayerNormalization"
            ]
        );
    }
}
