//! Weight-only int8 graphs kept int8 in memory: a rewrite of the ONNX graph before tract parses
//! it.
//!
//! Weight-only int8 exports dequantize their tables inside the graph: `W_f32 = Cast(W_i8) * S`
//! (or `DequantizeLinear(W_i8, S)`, zero point 0), then `MatMul(X, W_f32)` or
//! `Gather(W_f32, ids)`. Left alone, tract folds every such constant it can into f32 (four times
//! the bytes) and casts the rest again on every call. Here:
//! - `MatMul(X, dequant(W))` with `W` a 2-D int8 initializer and `S` one scale per column (or
//!   one for all) becomes [`I8MatMul`](crate::i8mm): the int8 bytes are repacked into the
//!   kernel's panel order (the protobuf's copy is dropped, one matrix at a time) and multiplied
//!   by a kernel that widens them on the fly;
//! - `Gather(dequant(W), ids)` becomes `Cast(Gather(W, ids)) * S'` (`S'` gathered too when it
//!   holds one scale per row): only the gathered rows of a vocabulary table are ever converted.
//!
//! Anything else is left as it was: the graph stays correct, only bigger in memory.
//!
//! Then each `I8MatMul` takes over what follows it, when nothing else reads the values in
//! between: an `Add` of a constant bias (one value per column) and the exact GELU,
//! `x · ½ · (1 + erf(x / √2))` in any of the orders exporters write it. They become the
//! node's [`BIAS`] and [`GELU`] attributes, applied by the kernel before it stores a tile
//! (in tract they were five element-wise passes over the output, ≈ 10 % of MiniLM's forward
//! pass).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

use crate::i8mm::I8Weights;

/// The op type our rewritten `MatMul`s carry; its `key` attribute names their weights in
/// [`WEIGHTS`].
pub const I8_MATMUL: &str = "EmbedfnI8MatMul";

/// The `I8MatMul` attribute holding a fused bias (floats, one per column).
pub const BIAS: &str = "bias";

/// The `I8MatMul` attribute (int, 1) saying a GELU follows the bias.
pub const GELU: &str = "gelu";

/// Weights handed from the rewrite to the op parser (tract's parser registry takes plain `fn`s).
static WEIGHTS: Mutex<Option<HashMap<String, Arc<I8Weights>>>> = Mutex::new(None);

/// The weights the rewrite registered under `key`.
pub fn weights(key: &str) -> Option<Arc<I8Weights>> {
    let mut table = WEIGHTS.lock().ok()?;
    table.as_mut()?.get(key).cloned()
}

/// Forgets the registered weights (the plan holds its own references).
pub fn clear_weights() {
    if let Ok(mut table) = WEIGHTS.lock() {
        *table = None;
    }
}

/// A dequantized constant: `Cast(W) * S` or `DequantizeLinear(W, S[, 0])`.
struct Dequant {
    /// The node producing the f32 table.
    node: usize,
    weight: String,
    scale: String,
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    (t.raw_data.len() % 4 == 0).then(|| {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

fn is_zero(t: &TensorProto) -> bool {
    t.raw_data.iter().all(|b| *b == 0) && t.int32_data.iter().all(|v| *v == 0)
}

/// Rewrites `graph` in place (see the module's documentation).
pub fn rewrite(graph: &mut GraphProto) {
    // Subgraphs may read any outer name: leave such graphs alone.
    if graph.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return;
    }
    let inits: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let int8 = |name: &str| {
        inits.get(name).map(|&i| &graph.initializer[i]).filter(|t| {
            t.data_type == DataType::Int8 as i32
                && !t.raw_data.is_empty()
                && t.raw_data.len() as i64 == t.dims.iter().product::<i64>()
        })
    };
    let float_init = |name: &str| {
        inits
            .get(name)
            .map(|&i| &graph.initializer[i])
            .filter(|t| t.data_type == DataType::Float as i32)
    };
    // Every dequantized constant, by the name of its f32 output.
    let mut dequants: HashMap<String, Dequant> = HashMap::new();
    for (ix, n) in graph.node.iter().enumerate() {
        let found = match n.op_type.as_str() {
            "Mul" if n.input.len() == 2 => (0..2).find_map(|side| {
                let cast = &graph.node[*producer.get(n.input[side].as_str())?];
                let ok = cast.op_type == "Cast"
                    && attr_i(cast, "to") == Some(DataType::Float as i64)
                    && int8(&cast.input[0]).is_some()
                    && float_init(&n.input[1 - side]).is_some();
                ok.then(|| (cast.input[0].clone(), n.input[1 - side].clone()))
            }),
            "DequantizeLinear" if n.input.len() >= 2 => {
                let zero_ok = n.input.get(2).is_none_or(|z| {
                    z.is_empty()
                        || inits
                            .get(z)
                            .is_some_and(|&i| is_zero(&graph.initializer[i]))
                });
                let scalar =
                    float_init(&n.input[1]).is_some_and(|t| t.dims.iter().product::<i64>() == 1);
                (zero_ok && scalar && int8(&n.input[0]).is_some())
                    .then(|| (n.input[0].clone(), n.input[1].clone()))
            }
            _ => None,
        };
        if let Some((weight, scale)) = found {
            dequants.insert(
                n.output[0].clone(),
                Dequant {
                    node: ix,
                    weight,
                    scale,
                },
            );
        }
    }
    if dequants.is_empty() {
        return;
    }

    let mut replaced: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut matmuls: Vec<(String, String, String)> = Vec::new();
    for (ix, n) in graph.node.iter().enumerate() {
        match n.op_type.as_str() {
            "MatMul" if n.input.len() == 2 => {
                let Some(d) = dequants.get(&n.input[1]) else {
                    continue;
                };
                let w = int8(&d.weight).expect("checked above");
                let Some(scale) = float_init(&d.scale) else {
                    continue;
                };
                let cols = w.dims.last().copied().unwrap_or(0);
                let per_column = scale.dims.iter().product::<i64>() == cols
                    && scale.dims.iter().rev().skip(1).all(|d| *d == 1);
                if w.dims.len() != 2 || !(per_column || scale.dims.iter().product::<i64>() == 1) {
                    continue;
                }
                let key = format!("{}*{}", d.weight, d.scale);
                let node = NodeProto {
                    input: vec![n.input[0].clone()],
                    output: n.output.clone(),
                    name: n.name.clone(),
                    op_type: I8_MATMUL.into(),
                    attribute: vec![AttributeProto {
                        name: "key".into(),
                        r#type: AttributeType::String as i32,
                        s: key.clone().into_bytes(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                matmuls.push((key, d.weight.clone(), d.scale.clone()));
                replaced.push((ix, vec![node]));
            }
            "Gather" if n.input.len() == 2 && attr_i(n, "axis").unwrap_or(0) == 0 => {
                let Some(d) = dequants.get(&n.input[0]) else {
                    continue;
                };
                let w = int8(&d.weight).expect("checked above");
                let Some(scale) = float_init(&d.scale) else {
                    continue;
                };
                let dequant_op = &graph.node[d.node].op_type;
                let (ids, out, base) = (&n.input[1], &n.output[0], format!("{}.i8", n.name));
                let gathered = format!("{base}.rows");
                let mut nodes = vec![NodeProto {
                    input: vec![d.weight.clone(), ids.clone()],
                    output: vec![gathered.clone()],
                    name: gathered.clone(),
                    op_type: "Gather".into(),
                    attribute: vec![int_attr("axis", 0)],
                    ..Default::default()
                }];
                if dequant_op == "DequantizeLinear" {
                    // A scalar scale and zero point: dequantize the gathered rows alike.
                    let mut dq = graph.node[d.node].clone();
                    dq.input[0] = gathered;
                    dq.output = vec![out.clone()];
                    dq.name = format!("{base}.dequantize");
                    nodes.push(dq);
                } else {
                    let numel = scale.dims.iter().product::<i64>();
                    let same_rank = scale.dims.len() == w.dims.len();
                    let scale_in = if same_rank && scale.dims[0] == w.dims[0] && numel > 1 {
                        // One scale per row: gather the scales with the rows.
                        let s = format!("{base}.scales");
                        nodes.push(NodeProto {
                            input: vec![d.scale.clone(), ids.clone()],
                            output: vec![s.clone()],
                            name: s.clone(),
                            op_type: "Gather".into(),
                            attribute: vec![int_attr("axis", 0)],
                            ..Default::default()
                        });
                        s
                    } else if same_rank && scale.dims[0] == 1 {
                        // Broadcast over rows: drop the leading 1 so it aligns with ids' axes.
                        let mut s = scale.clone();
                        s.name = format!("{base}.scale");
                        s.dims.remove(0);
                        new_inits.push(s);
                        format!("{base}.scale")
                    } else if scale.dims.len() < w.dims.len() {
                        d.scale.clone()
                    } else {
                        continue;
                    };
                    let cast = format!("{base}.f32");
                    nodes.push(NodeProto {
                        input: vec![gathered],
                        output: vec![cast.clone()],
                        name: cast.clone(),
                        op_type: "Cast".into(),
                        attribute: vec![int_attr("to", DataType::Float as i64)],
                        ..Default::default()
                    });
                    nodes.push(NodeProto {
                        input: vec![cast, scale_in],
                        output: vec![out.clone()],
                        name: format!("{base}.scaled"),
                        op_type: "Mul".into(),
                        ..Default::default()
                    });
                }
                replaced.push((ix, nodes));
            }
            _ => {}
        }
    }
    if replaced.is_empty() {
        return;
    }
    graph.initializer.extend(new_inits);
    for (ix, nodes) in replaced.into_iter().rev() {
        graph.node.splice(ix..=ix, nodes);
    }
    remove_dead(graph);

    // The MatMul weights: moved out of the graph when nothing else reads them.
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    let mut table = HashMap::new();
    let mut moved = HashSet::new();
    for (key, weight, scale) in matmuls {
        if table.contains_key(&key) {
            continue;
        }
        let index = |name: &str| graph.initializer.iter().position(|t| t.name == name);
        let (Some(wi), Some(si)) = (index(&weight), index(&scale)) else {
            continue;
        };
        let scales = floats(&graph.initializer[si]).unwrap_or_default();
        let w = &mut graph.initializer[wi];
        let (k, n) = (w.dims[0] as usize, w.dims[1] as usize);
        let scale = if scales.len() == 1 {
            vec![scales[0]; n]
        } else {
            scales
        };
        // Repacked in the kernel's panel order; the protobuf's copy goes unless read elsewhere.
        table.insert(key, Arc::new(I8Weights::new(k, n, &w.raw_data, scale)));
        if !used.contains(&weight) {
            moved.insert(weight.clone());
            w.raw_data = Default::default();
        }
    }
    graph.initializer.retain(|t| !moved.contains(&t.name));
    graph.input.retain(|i| !moved.contains(&i.name));
    fuse_epilogues(graph, &table);
    if let Ok(mut w) = WEIGHTS.lock() {
        *w = Some(table);
    }
}

/// Removes dequantizing nodes none of whose outputs is read (by a node or as a graph output),
/// repeatedly.
fn remove_dead(graph: &mut GraphProto) {
    loop {
        let used: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .collect();
        let dead: Vec<usize> = (0..graph.node.len())
            .filter(|&i| {
                matches!(
                    graph.node[i].op_type.as_str(),
                    "Cast" | "Mul" | "DequantizeLinear"
                ) && graph.node[i]
                    .output
                    .iter()
                    .all(|o| o.is_empty() || !used.contains(o.as_str()))
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        for i in dead.into_iter().rev() {
            graph.node.remove(i);
        }
    }
}

/// Folds the bias `Add` and the GELU after each `I8MatMul` into its attributes (see the
/// module's documentation).
fn fuse_epilogues(graph: &mut GraphProto, table: &HashMap<String, Arc<I8Weights>>) {
    let scalars: HashMap<&str, f32> = graph
        .initializer
        .iter()
        .filter_map(|t| match floats(t)?.as_slice() {
            [v] => Some((t.name.as_str(), *v)),
            _ => None,
        })
        .collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let graph_ref = &*graph;
    let node = |i: usize| &graph_ref.node[i];
    // The one node reading `name`, when nothing else (no node, no graph output) does.
    let sole = |name: &str| match readers.get(name).map(Vec::as_slice) {
        Some([i]) if !outputs.contains(name) => Some(*i),
        _ => None,
    };
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
        let [first, second] = readers.get(x)?.as_slice() else {
            return None;
        };
        if outputs.contains(x) {
            return None;
        }
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
