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
//! - `Gather(dequant(W), ids)` with one scale, one per row or one per column becomes
//!   [`I8Gather`](crate::i8gather): the table's bytes move out of the protobuf into the op, and
//!   only the gathered rows of a vocabulary are ever converted.
//!
//! Anything else is left as it was: the graph stays correct, only bigger in memory.
//!
//! Then [`crate::fuse`] folds what follows each `I8MatMul` into it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

use crate::i8gather::{I8Table, Scale};
use crate::i8mm::I8Weights;

/// The op type our rewritten `MatMul`s carry; its `key` attribute names their weights in
/// [`WEIGHTS`].
pub const I8_MATMUL: &str = "EmbedfnI8MatMul";

/// The op type our rewritten `Gather`s carry; its `key` attribute names their table in
/// [`TABLES`].
pub const I8_GATHER: &str = "EmbedfnI8Gather";

/// Values handed from the rewrite to the op parsers by key (tract's parser registry takes
/// plain `fn`s, so they cannot carry them).
struct Handoff<T>(Mutex<Option<HashMap<String, Arc<T>>>>);

impl<T> Handoff<T> {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    fn get(&self, key: &str) -> Option<Arc<T>> {
        self.0.lock().ok()?.as_ref()?.get(key).cloned()
    }

    fn set(&self, values: Option<HashMap<String, Arc<T>>>) {
        if let Ok(mut held) = self.0.lock() {
            *held = values;
        }
    }
}

/// The int8 tables of [`I8_GATHER`] nodes.
static TABLES: Handoff<I8Table> = Handoff::new();

/// Which [`Scale`] a gathered table's scale tensor is.
#[derive(Clone, Copy)]
enum ScaleKind {
    All,
    Row,
    Column,
}

/// The `I8MatMul` attribute holding a fused bias (floats, one per column).
pub const BIAS: &str = "bias";

/// The `I8MatMul` attribute (int, 1) saying a GELU follows the bias.
pub const GELU: &str = "gelu";

/// The int8 weights of [`I8_MATMUL`] nodes.
static WEIGHTS: Handoff<I8Weights> = Handoff::new();

/// The weights the rewrite registered under `key`.
pub fn weights(key: &str) -> Option<Arc<I8Weights>> {
    WEIGHTS.get(key)
}

/// The table the rewrite registered under `key`.
pub fn table(key: &str) -> Option<Arc<I8Table>> {
    TABLES.get(key)
}

/// Forgets the registered weights and tables (the plan holds its own references).
pub fn clear_weights() {
    WEIGHTS.set(None);
    TABLES.set(None);
}

/// A dequantized constant: `Cast(W) * S` or `DequantizeLinear(W, S[, 0])`.
struct Dequant {
    weight: String,
    scale: String,
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn str_attr(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

pub(crate) fn floats(t: &TensorProto) -> Option<Vec<f32>> {
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
    for n in &graph.node {
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
            dequants.insert(n.output[0].clone(), Dequant { weight, scale });
        }
    }
    if dequants.is_empty() {
        return;
    }

    let mut replaced: Vec<(usize, Vec<NodeProto>)> = Vec::new();
    let mut matmuls: Vec<(String, String, String)> = Vec::new();
    let mut gathers: Vec<(String, String, String, ScaleKind)> = Vec::new();
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
                    attribute: vec![str_attr("key", &key)],
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
                let (rows, dim) = match w.dims[..] {
                    [rows, dim] => (rows, dim),
                    _ => continue,
                };
                // DequantizeLinear was only taken with a scalar scale.
                let numel = scale.dims.iter().product::<i64>();
                let same_rank = scale.dims.len() == w.dims.len();
                let kind = if numel == 1 {
                    ScaleKind::All
                } else if same_rank && scale.dims == [rows, 1] {
                    ScaleKind::Row
                } else if numel == dim && (scale.dims.len() == 1 || scale.dims == [1, dim]) {
                    ScaleKind::Column
                } else {
                    continue;
                };
                let key = format!("{}*{}", d.weight, d.scale);
                gathers.push((key.clone(), d.weight.clone(), d.scale.clone(), kind));
                replaced.push((
                    ix,
                    vec![NodeProto {
                        input: vec![n.input[1].clone()],
                        output: n.output.clone(),
                        name: n.name.clone(),
                        op_type: I8_GATHER.into(),
                        attribute: vec![str_attr("key", &key)],
                        ..Default::default()
                    }],
                ));
            }
            _ => {}
        }
    }
    if replaced.is_empty() {
        return;
    }
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
    let mut moved = HashSet::new();
    let index =
        |graph: &GraphProto, name: &str| graph.initializer.iter().position(|t| t.name == name);
    // The tables first: one that another op also reads (a MatMul, a Gather with other
    // scales) is copied, not moved.
    let mut readers: HashMap<String, usize> = HashMap::new();
    let keys: HashSet<(&String, &String)> = matmuls
        .iter()
        .map(|m| (&m.0, &m.1))
        .chain(gathers.iter().map(|g| (&g.0, &g.1)))
        .collect();
    for (_, weight) in keys {
        *readers.entry(weight.clone()).or_default() += 1;
    }
    let mut tables = HashMap::new();
    for (key, weight, scale, kind) in gathers {
        if tables.contains_key(&key) {
            continue;
        }
        let (Some(wi), Some(si)) = (index(graph, &weight), index(graph, &scale)) else {
            continue;
        };
        let scales = floats(&graph.initializer[si]).unwrap_or_default();
        let scale = match kind {
            ScaleKind::All => Scale::All(scales.first().copied().unwrap_or(1.0)),
            ScaleKind::Row => Scale::Row(scales),
            ScaleKind::Column => Scale::Column(scales),
        };
        let w = &mut graph.initializer[wi];
        let (rows, dim) = (w.dims[0] as usize, w.dims[1] as usize);
        let keep = used.contains(&weight) || readers.get(&weight).is_some_and(|n| *n > 1);
        let data = if keep {
            w.raw_data.clone()
        } else {
            moved.insert(weight.clone());
            std::mem::take(&mut w.raw_data)
        };
        if let Some(t) = I8Table::new(rows, dim, data, scale) {
            tables.insert(key, Arc::new(t));
        }
    }
    let mut table = HashMap::new();
    for (key, weight, scale) in matmuls {
        if table.contains_key(&key) {
            continue;
        }
        let (Some(wi), Some(si)) = (index(graph, &weight), index(graph, &scale)) else {
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
    crate::fuse::epilogues(graph, &table);
    WEIGHTS.set(Some(table));
    TABLES.set(Some(tables));
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
