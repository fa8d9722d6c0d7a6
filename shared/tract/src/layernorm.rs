//! `LayerNorm`: ONNX `LayerNormalization` over the last axis as one tract op.
//!
//! tract imports `LayerNormalization` as five ops (a sum, a scale, a subtraction, an RMS
//! normalisation and a multiply-add), each a pass over the activations with a tensor of its
//! own: ≈ 4 % of MiniLM's forward pass in the component. This op normalises each row in place
//! while it is in cache: its mean, the mean square of its deviations (two passes, so no
//! cancellation), then `(x - mean) / √(var + ε) · scale + bias`. [`rewrite`] renames the
//! graph's `LayerNormalization` nodes that it can take (normalised over the last axis, only the
//! first output used); any other stays tract's. It also takes over the `Add` before one, when
//! nothing else reads the sum: a transformer's residual connection, `LayerNorm(x + f(x))`, is
//! then one op too (tract's `Add` was another pass and another tensor; an `Add` whose inputs
//! turn out to differ in shape is wired as tract's `Add` again).

use std::collections::HashMap;

use tract_onnx::pb::GraphProto;
use tract_onnx::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, Expansion, InferenceOp, InferenceResult, Solver,
    TensorProxy,
};

use crate::fuse::Readers;
use crate::quant::int_attr;

/// The op type [`rewrite`] gives the nodes it hands to this op.
pub const LAYER_NORM: &str = "EmbedfnLayerNorm";

/// Renames each `LayerNormalization` over the last axis (`axis` -1, the default) whose `Mean`
/// and `InvStdDev` outputs are unused to [`LAYER_NORM`]; its inputs and `epsilon` stay. When
/// its `X` is an `Add` read by nothing else, the `Add` goes: its two inputs come first, and
/// the node gets [`SKIP`].
pub fn rewrite(graph: &mut GraphProto) {
    // The nodes to rename, each with the `Add` it takes over.
    let taken: Vec<(usize, Option<usize>)> = {
        let readers = Readers::of(graph);
        let made_by: HashMap<&str, usize> = graph
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let is_add = |a: &usize| graph.node[*a].op_type == "Add" && graph.node[*a].input.len() == 2;
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let axis = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "axis")
                    .map_or(-1, |a| a.i);
                let one_output = n.output.iter().skip(1).all(String::is_empty);
                let onnx = n.domain.is_empty() || n.domain == "ai.onnx";
                n.op_type == "LayerNormalization" && onnx && axis == -1 && one_output
            })
            .map(|(i, n)| {
                let add = n
                    .input
                    .first()
                    .filter(|x| readers.sole(x) == Some(i))
                    .and_then(|x| made_by.get(x.as_str()).copied())
                    .filter(is_add);
                (i, add)
            })
            .collect()
    };
    let mut dead = Vec::new();
    for (i, add) in taken {
        graph.node[i].op_type = LAYER_NORM.into();
        if let Some(a) = add {
            let sum = graph.node[a].input.clone();
            let n = &mut graph.node[i];
            n.input.splice(0..1, sum);
            n.attribute.push(int_attr(SKIP, 1));
            dead.push(a);
        }
    }
    dead.sort_unstable();
    for a in dead.into_iter().rev() {
        graph.node.remove(a);
    }
}

/// The [`LAYER_NORM`] attribute (int, 1) saying the first two inputs are to be added.
pub const SKIP: &str = "skip";

/// The typed op: inputs `X [.., C]` (with [`LayerNorm::skip`], `X` and a residual of the same
/// shape, added first), `scale [C]` and optionally `bias [C]` (f32).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    epsilon: f32,
    skip: bool,
}

impl PartialEq for LayerNorm {
    fn eq(&self, other: &Self) -> bool {
        self.epsilon.to_bits() == other.epsilon.to_bits() && self.skip == other.skip
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
        // Taken by value: `X` is normalised in place, copied only if another node still
        // holds it.
        let mut inputs = inputs.into_iter();
        let mut next = || {
            inputs
                .next()
                .ok_or_else(|| format_err!("LayerNorm: too few inputs"))
        };
        let mut y = next()?.into_tensor();
        let residual = if self.skip { Some(next()?) } else { None };
        let scale = next()?;
        let bias = next().ok();
        ensure!(
            y.datum_type() == f32::datum_type(),
            "LayerNorm on {:?}",
            y.datum_type()
        );
        let c = y.shape().last().copied().unwrap_or(1);
        if let Some(r) = &residual {
            ensure!(
                r.shape() == y.shape(),
                "LayerNorm adds {:?} to {:?}",
                r.shape(),
                y.shape()
            );
        }
        let residual = residual.as_ref().map(|r| r.cast_to::<f32>()).transpose()?;
        let scale = scale.cast_to::<f32>()?;
        let bias = bias.as_ref().map(|b| b.cast_to::<f32>()).transpose()?;
        let residual = residual
            .as_ref()
            .map(|r| r.try_as_plain_ram())
            .transpose()?;
        let (scale, bias) = (
            scale.try_as_plain_ram()?,
            bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?,
        );
        let residual = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
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
            let rows = ys.as_slice_mut::<f32>()?.chunks_exact_mut(c);
            for (i, row) in rows.enumerate() {
                if let Some(r) = residual {
                    for (v, r) in row.iter_mut().zip(&r[i * c..]) {
                        *v += r;
                    }
                }
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
        let skip = usize::from(self.0.skip);
        if inputs.len() != 2 + skip {
            check_input_arity(inputs, 3 + skip)?;
        }
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        if self.0.skip {
            s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
                s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
            })
        } else {
            s.equals(&inputs[0].shape, &outputs[0].shape)
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (a, b) = (inputs[0], inputs.get(1).copied());
        if self.0.skip && model.outlet_fact(a)?.shape != model.outlet_fact(b.unwrap_or(a))?.shape {
            // Broadcasting: tract's Add, then the plain op.
            let sum = wire_with_rank_broadcast(
                format!("{prefix}.add"),
                model,
                tract_onnx::tract_core::ops::math::add(),
                &inputs[..2],
            )?;
            let op = LayerNorm {
                skip: false,
                ..self.0.clone()
            };
            let rest: TVec<OutletId> = sum.into_iter().chain(inputs[2..].iter().copied()).collect();
            return model.wire_node(prefix, op, &rest);
        }
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// The parser of [`LAYER_NORM`] nodes.
pub fn parse(
    _: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr_opt::<f32>("epsilon")?.unwrap_or(1e-5);
    let skip = node.get_attr_opt::<i64>(SKIP)?.unwrap_or(0) != 0;
    Ok((
        expand(LayerNormExpansion(LayerNorm { epsilon, skip })),
        vec![],
    ))
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

    fn add(a: &str, b: &str, out: &str) -> NodeProto {
        NodeProto {
            op_type: "Add".into(),
            input: vec![a.into(), b.into()],
            output: vec![out.into()],
            ..Default::default()
        }
    }

    #[test]
    fn rewrite_takes_the_add_before_when_nothing_else_reads_the_sum() {
        // x = h + r feeds only the LayerNorm: the Add goes into it.
        let mut graph = GraphProto {
            node: vec![add("h", "r", "x"), layer_norm(vec![], &["y"])],
            ..Default::default()
        };
        rewrite(&mut graph);
        assert_eq!(graph.node.len(), 1);
        let n = &graph.node[0];
        assert_eq!(n.op_type, LAYER_NORM);
        assert_eq!(n.input, ["h", "r", "g", "b"]);
        assert!(n.attribute.iter().any(|a| a.name == SKIP && a.i == 1));
        // The sum read elsewhere too (by a node, or as a graph output): the Add stays.
        for graph_output in [false, true] {
            let mut graph = GraphProto {
                node: vec![add("h", "r", "x"), layer_norm(vec![], &["y"])],
                ..Default::default()
            };
            if graph_output {
                graph.output.push(tract_onnx::pb::ValueInfoProto {
                    name: "x".into(),
                    ..Default::default()
                });
            } else {
                graph.node.push(add("x", "x", "z"));
            }
            rewrite(&mut graph);
            let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
            assert_eq!(&ops[..2], ["Add", LAYER_NORM]);
            assert_eq!(graph.node[1].input[0], "x");
            assert!(graph.node[1].attribute.is_empty());
        }
    }

    /// The op on a tract model: `LayerNorm(h + r)` equals the same computed by hand, and a
    /// residual of another shape is broadcast by the `Add` wired in front.
    #[test]
    fn a_skip_adds_then_normalizes() {
        let c = 8;
        let h: Vec<f32> = (0..2 * c).map(|i| i as f32 * 0.37 - 1.0).collect();
        let r: Vec<f32> = (0..2 * c).map(|i| (i * i % 7) as f32 * 0.5).collect();
        let g: Vec<f32> = (0..c).map(|i| 1.0 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * -0.05).collect();
        let run = |r_shape: &[usize], r: &[f32]| -> Vec<f32> {
            let mut model = TypedModel::default();
            let hs = model.add_source("h", f32::fact([2, c])).unwrap();
            let rs = model.add_source("r", f32::fact(r_shape)).unwrap();
            let gs = model.add_const("g", tensor1(&g)).unwrap();
            let bs = model.add_const("b", tensor1(&b)).unwrap();
            let op = LayerNormExpansion(LayerNorm {
                epsilon: 1e-5,
                skip: true,
            });
            let y = op.wire("ln", &mut model, &[hs, rs, gs, bs]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let plan = model.into_runnable().unwrap();
            let inputs = tvec!(
                Tensor::from_shape(&[2, c], &h).unwrap().into_tvalue(),
                Tensor::from_shape(r_shape, r).unwrap().into_tvalue()
            );
            let out = plan.run(inputs).unwrap();
            let ram = out[0].try_as_plain_ram().unwrap();
            ram.as_slice::<f32>().unwrap().to_vec()
        };
        let expect = |r_row: &dyn Fn(usize) -> usize| -> Vec<f32> {
            let mut want = Vec::new();
            for row in 0..2 {
                let mut v: Vec<f32> = (0..c)
                    .map(|i| h[row * c + i] + r[r_row(row) * c + i])
                    .collect();
                normalize(&mut v, &g, Some(&b), 1e-5);
                want.extend(v);
            }
            want
        };
        assert_eq!(run(&[2, c], &r), expect(&|row| row));
        assert_eq!(run(&[1, c], &r[..c]), expect(&|_| 0));
    }
}
