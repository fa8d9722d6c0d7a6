//! Epilogue fusion for [`crate::quant`]'s rewritten graphs: each `I8MatMul` takes over what
//! follows it, when nothing else reads the values in between: an `Add` of a constant bias
//! (one value per column) and the exact GELU, `x · ½ · (1 + erf(x / √2))` in any of the
//! orders exporters write it. They become the node's [`BIAS`] and [`GELU`] attributes, applied
//! by the kernel before it stores a tile (in tract they were five element-wise passes over the
//! output, ≈ 10 % of MiniLM's forward pass).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, GraphProto};

use crate::i8mm::I8Weights;
use crate::quant::{floats, int_attr, BIAS, GELU, I8_MATMUL};

/// Who reads each value of a graph: the nodes naming it as an input (by index, once per
/// input), and whether it is one of the graph's outputs.
pub struct Readers<'g> {
    nodes: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
}

impl<'g> Readers<'g> {
    pub fn of(graph: &'g GraphProto) -> Self {
        let mut nodes: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for input in &n.input {
                nodes.entry(input.as_str()).or_default().push(i);
            }
        }
        let outputs = graph.output.iter().map(|o| o.name.as_str()).collect();
        Self { nodes, outputs }
    }

    /// The nodes reading `name`, when it is not also a graph output.
    pub fn nodes(&self, name: &str) -> Option<&[usize]> {
        if self.outputs.contains(name) {
            return None;
        }
        self.nodes.get(name).map(Vec::as_slice)
    }

    /// The one node reading `name`, when nothing else (no node, no graph output) does.
    pub fn sole(&self, name: &str) -> Option<usize> {
        match self.nodes(name)? {
            [i] => Some(*i),
            _ => None,
        }
    }
}

/// Folds the bias `Add` and the GELU after each `I8MatMul` into its attributes (see the
/// module's documentation).
pub fn epilogues(graph: &mut GraphProto, table: &HashMap<String, Arc<I8Weights>>) {
    let scalars: HashMap<&str, f32> = graph
        .initializer
        .iter()
        .filter_map(|t| match floats(t)?.as_slice() {
            [v] => Some((t.name.as_str(), *v)),
            _ => None,
        })
        .collect();
    let readers = Readers::of(graph);
    let graph_ref = &*graph;
    let node = |i: usize| &graph_ref.node[i];
    let sole = |name: &str| readers.sole(name);
    // `i`'s input other than `name`, when `i` is an `op` of two inputs reading `name` once.
    let other = |i: usize, op: &str, name: &str| -> Option<String> {
        let n = node(i);
        if n.op_type != op || n.input.len() != 2 {
            return None;
        }
        match (n.input[0] == name, n.input[1] == name) {
            (true, false) => Some(n.input[1].clone()),
            (false, true) => Some(n.input[0].clone()),
            _ => None,
        }
    };
    let is = |name: &str, value: f32| {
        scalars
            .get(name)
            .is_some_and(|v| (v - value).abs() <= 1e-6 * value.abs())
    };
    let out = |i: usize| node(i).output[0].clone();
    // `x · ½ · (1 + erf(x / √2))` from `x`: the nodes it takes and its output.
    let gelu = |x: &str| -> Option<(Vec<usize>, String)> {
        let [first, second] = readers.nodes(x)? else {
            return None;
        };
        let scaled = |i: usize| {
            let c = other(i, "Div", x)
                .map(|c| is(&c, std::f32::consts::SQRT_2))
                .or_else(|| other(i, "Mul", x).map(|c| is(&c, std::f32::consts::FRAC_1_SQRT_2)));
            c == Some(true)
        };
        let (div, mul) = if scaled(*first) {
            (*first, *second)
        } else if scaled(*second) {
            (*second, *first)
        } else {
            return None;
        };
        let erf = sole(&out(div)).filter(|&i| node(i).op_type == "Erf")?;
        let plus = sole(&out(erf))?;
        if !is(&other(plus, "Add", &out(erf))?, 1.0) {
            return None;
        }
        let after_plus = sole(&out(plus))?;
        let taken = |last: usize, mid: usize| Some((vec![div, erf, plus, mid, last], out(last)));
        // x · ((1 + erf) · ½)
        if other(after_plus, "Mul", &out(plus)).is_some_and(|c| is(&c, 0.5))
            && sole(&out(after_plus)) == Some(mul)
            && other(mul, "Mul", x) == Some(out(after_plus))
        {
            return taken(mul, after_plus);
        }
        // (x · ½) · (1 + erf)
        if other(mul, "Mul", x).is_some_and(|c| is(&c, 0.5))
            && sole(&out(mul)) == Some(after_plus)
            && other(after_plus, "Mul", &out(plus)) == Some(out(mul))
        {
            return taken(after_plus, mul);
        }
        // (x · (1 + erf)) · ½
        if after_plus == mul && other(mul, "Mul", x) == Some(out(plus)) {
            let last = sole(&out(mul))?;
            if other(last, "Mul", &out(mul)).is_some_and(|c| is(&c, 0.5)) {
                return taken(last, mul);
            }
        }
        None
    };

    let mut fused: Vec<(usize, Option<Vec<f32>>, bool, String)> = Vec::new();
    let mut dead: HashSet<usize> = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type != I8_MATMUL {
            continue;
        }
        let key = n
            .attribute
            .iter()
            .find(|a| a.name == "key")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned());
        let Some(w) = key.and_then(|k| table.get(&k)) else {
            continue;
        };
        let mut end = n.output[0].clone();
        let mut bias = None;
        if let Some(add) = sole(&end) {
            let values = other(add, "Add", &end)
                .and_then(|b| graph.initializer.iter().find(|t| t.name == b))
                .filter(|t| t.dims.iter().rev().skip(1).all(|d| *d == 1))
                .and_then(floats)
                .filter(|v| v.len() == w.n());
            if let Some(values) = values {
                bias = Some(values);
                dead.insert(add);
                end = out(add);
            }
        }
        let activation = gelu(&end);
        if let Some((nodes, last)) = &activation {
            dead.extend(nodes);
            end = last.clone();
        }
        if bias.is_some() || activation.is_some() {
            fused.push((i, bias, activation.is_some(), end));
        }
    }
    for (i, bias, gelu, end) in fused {
        let n = &mut graph.node[i];
        n.output[0] = end;
        if let Some(values) = bias {
            n.attribute.push(AttributeProto {
                name: BIAS.into(),
                r#type: AttributeType::Floats as i32,
                floats: values,
                ..Default::default()
            });
        }
        if gelu {
            n.attribute.push(int_attr(GELU, 1));
        }
    }
    let mut dead: Vec<usize> = dead.into_iter().collect();
    dead.sort_unstable();
    for i in dead.into_iter().rev() {
        graph.node.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::pb::{NodeProto, TensorProto, ValueInfoProto};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            ..Default::default()
        }
    }

    fn floats_init(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: DataType::Float as i32,
            dims: dims.to_vec(),
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    /// `I8MatMul(x) + b`, then `gelu` nodes reading `h`, with the graph's outputs.
    fn graph(gelu: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
        let mut matmul = node(I8_MATMUL, &["x"], "mm");
        matmul.attribute.push(AttributeProto {
            name: "key".into(),
            r#type: AttributeType::String as i32,
            s: b"k".to_vec(),
            ..Default::default()
        });
        GraphProto {
            node: [vec![matmul, node("Add", &["b", "mm"], "h")], gelu].concat(),
            initializer: vec![
                floats_init("b", &[3], &[0.5, -1.0, 2.0]),
                floats_init("sqrt2", &[], &[std::f32::consts::SQRT_2]),
                floats_init("one", &[], &[1.0]),
                floats_init("half", &[], &[0.5]),
            ],
            output: outputs
                .iter()
                .map(|o| ValueInfoProto {
                    name: o.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The nodes left, as `op -> output`, and the matmul's epilogue attributes.
    fn fused(mut g: GraphProto) -> (Vec<String>, Vec<String>) {
        let w = Arc::new(I8Weights::new(2, 3, &[1; 6], vec![1.0; 3]));
        epilogues(&mut g, &HashMap::from([("k".to_string(), w)]));
        let nodes = g
            .node
            .iter()
            .map(|n| format!("{} -> {}", n.op_type, n.output[0]))
            .collect();
        let attrs = g.node[0]
            .attribute
            .iter()
            .map(|a| match a.name.as_str() {
                BIAS => format!("bias {:?}", a.floats),
                _ => format!("{} {}", a.name, a.i),
            })
            .filter(|a| !a.starts_with("key"))
            .collect();
        (nodes, attrs)
    }

    fn erf_plus_one() -> Vec<NodeProto> {
        vec![
            node("Div", &["h", "sqrt2"], "d"),
            node("Erf", &["d"], "e"),
            node("Add", &["one", "e"], "p"),
        ]
    }

    #[test]
    fn bias_and_every_gelu_order_fold_into_the_matmul() {
        let want = (
            vec![format!("{I8_MATMUL} -> y")],
            vec!["bias [0.5, -1.0, 2.0]".to_string(), "gelu 1".to_string()],
        );
        // x · ((1 + erf) · ½)
        let a = [
            erf_plus_one(),
            vec![
                node("Mul", &["p", "half"], "q"),
                node("Mul", &["h", "q"], "y"),
            ],
        ];
        assert_eq!(fused(graph(a.concat(), &["y"])), want);
        // (x · ½) · (1 + erf)
        let b = [
            vec![node("Mul", &["h", "half"], "m")],
            erf_plus_one(),
            vec![node("Mul", &["m", "p"], "y")],
        ];
        assert_eq!(fused(graph(b.concat(), &["y"])), want);
        // (x · (1 + erf)) · ½
        let c = [
            erf_plus_one(),
            vec![
                node("Mul", &["h", "p"], "m"),
                node("Mul", &["half", "m"], "y"),
            ],
        ];
        assert_eq!(fused(graph(c.concat(), &["y"])), want);
    }

    #[test]
    fn values_read_elsewhere_stay() {
        // `x · ½` is also a graph output: the GELU stays, the bias still folds.
        let b = [
            vec![node("Mul", &["h", "half"], "m")],
            erf_plus_one(),
            vec![node("Mul", &["m", "p"], "y")],
        ];
        let (nodes, attrs) = fused(graph(b.concat(), &["y", "m"]));
        assert_eq!(nodes.len(), 6, "{nodes:?}");
        assert_eq!(nodes[0], format!("{I8_MATMUL} -> h"));
        assert_eq!(attrs, ["bias [0.5, -1.0, 2.0]"]);
        // Not √2: no GELU.
        let mut g = graph(
            [
                erf_plus_one(),
                vec![
                    node("Mul", &["p", "half"], "q"),
                    node("Mul", &["h", "q"], "y"),
                ],
            ]
            .concat(),
            &["y"],
        );
        g.initializer[1].float_data = vec![1.5];
        assert_eq!(fused(g).0.len(), 6);
    }
}
