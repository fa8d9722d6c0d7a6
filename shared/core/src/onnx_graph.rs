//! What embedfn reads off an ONNX graph without loading its weights: a small streaming reader
//! of the protobuf that walks `ModelProto.graph` (and the subgraphs of `If`/`Loop` nodes) and
//! collects
//! - the weights: each initializer's, sparse initializer's and tensor attribute's `dims` and
//!   `data_type`, every payload (`raw_data`, `float_data`, …) skipped by seeking, so a
//!   multi-gigabyte model costs milliseconds (external data is never opened: the dims are in the
//!   graph file) — the parameter count and the real quantization (`/api/tags`, `/api/show`).
//!   4-bit weights packed two to a byte (the `B` input of `MatMulNBits` and `MatMulBnb4`)
//!   count as the weights they hold, not as bytes;
//! - the nodes' `op_type`s — what [`GraphFacts`](crate::spec::GraphFacts) is derived from
//!   (attention kind, batch dependence).
//!
//! The adapter opens the file; this module only reads what it is given, so the core stays free
//! of I/O.

use std::io::{Read, Seek, SeekFrom};

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::sentence::SENTENCE_EMBEDDING;
use crate::spec::GraphFacts;

/// `TensorProto.DataType` codes that decide the quantization label.
mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const BFLOAT16: i32 = 16;
    pub const UINT4: i32 = 21;
    pub const INT4: i32 = 22;
}

/// What [`read`] finds in a graph.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphSummary {
    /// The weights, counted.
    pub weights: WeightStats,
    /// Every node's `op_type`, subgraphs included.
    pub op_types: BTreeSet<String>,
    /// The graph's output names.
    pub outputs: Vec<String>,
}

impl GraphSummary {
    /// The facts the memory budget and the batch planner need.
    pub fn facts(&self) -> GraphFacts {
        GraphFacts {
            sentence_embedding: self.outputs.iter().any(|o| o == SENTENCE_EMBEDDING),
            ..GraphFacts::from_op_types(self.op_types.iter().map(String::as_str))
        }
    }
}

/// Reads an ONNX model file's [`GraphSummary`].
pub fn read<R: Read + Seek>(reader: R) -> Result<GraphSummary> {
    let mut r = Proto {
        inner: reader,
        pos: 0,
    };
    let mut acc = Acc::default();
    let end = r.inner.seek(SeekFrom::End(0)).map_err(io)?;
    r.inner.seek(SeekFrom::Start(0)).map_err(io)?;
    while r.pos < end {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (7, 2) => {
                let end = r.varint()? + r.pos;
                graph(&mut r, end, &mut acc)?;
            }
            _ => r.skip_value(wire)?,
        }
    }
    if r.pos != end {
        return Err(bad("a field overruns the file"));
    }
    let mut by_type: Vec<(i32, u64)> = acc.matrix.into_iter().collect();
    by_type.sort_unstable();
    // A packed initializer was counted once per element; it holds `per_element` weights.
    let unpacked: u64 = acc
        .packed
        .iter()
        .filter_map(|(name, per_element)| Some(acc.named.get(name)? * (per_element - 1)))
        .sum();
    Ok(GraphSummary {
        weights: WeightStats {
            parameters: acc.parameters.saturating_add(unpacked),
            matrix_elements_by_type: by_type,
            packed_4bit: acc.ops.contains("MatMulNBits"),
        },
        op_types: acc.ops,
        outputs: acc.outputs,
    })
}

/// The Ollama-style `quantization_level` of counted weights: the lowest-precision type that
/// holds at least a tenth of the matrix weights (an int8 file keeps its embedding table in f32,
/// yet its matrix multiplications run on int8 weights: Q8_0).
pub fn quantization_label(stats: &WeightStats) -> Option<&'static str> {
    if stats.packed_4bit {
        return Some("Q4_0");
    }
    let total: u64 = stats.matrix_elements_by_type.iter().map(|(_, n)| n).sum();
    let share = |codes: &[i32]| -> bool {
        let n: u64 = stats
            .matrix_elements_by_type
            .iter()
            .filter(|(t, _)| codes.contains(t))
            .map(|(_, n)| n)
            .sum();
        total > 0 && n * 10 >= total
    };
    use dtype::*;
    [
        (&[INT4, UINT4][..], "Q4_0"),
        (&[INT8, UINT8][..], "Q8_0"),
        (&[FLOAT16][..], "F16"),
        (&[BFLOAT16][..], "BF16"),
        (&[FLOAT][..], "F32"),
        (&[DOUBLE][..], "F64"),
    ]
    .into_iter()
    .find(|(codes, _)| share(codes))
    .map(|(_, label)| label)
}

/// An Ollama-style `parameter_size`: `22.7M`, `568M`, `1.2B`.
pub fn parameter_size(parameters: u64) -> String {
    let p = parameters as f64;
    if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else if p >= 1e8 {
        format!("{:.0}M", p / 1e6)
    } else if p >= 1e6 {
        format!("{:.1}M", p / 1e6)
    } else {
        format!("{:.1}K", p / 1e3)
    }
}

#[derive(Default)]
struct Acc {
    parameters: u64,
    matrix: std::collections::BTreeMap<i32, u64>,
    ops: BTreeSet<String>,
    /// Elements of each named initializer.
    named: HashMap<String, u64>,
    /// Initializers packed several weights to an element, by name: weights per element.
    packed: HashMap<String, u64>,
    /// The main graph's output names.
    outputs: Vec<String>,
    /// How deep in subgraphs the reader is (0: the main graph).
    depth: usize,
}

impl Acc {
    fn add(&mut self, dims: &[i64], data_type: i32) -> u64 {
        let n = dims
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d.max(0) as u64));
        self.parameters = self.parameters.saturating_add(n);
        if dims.len() >= 2 {
            *self.matrix.entry(data_type).or_default() += n;
        }
        n
    }
}

/// Weights per stored element of a node's packed weight input (input 1), if it has one:
/// `MatMulNBits` packs `8 / bits` (default 4 bits), `MatMulBnb4` two.
fn weights_per_element(op: &str, bits: Option<u64>) -> Option<u64> {
    match op {
        "MatMulNBits" => Some(8 / bits.unwrap_or(4).clamp(1, 8)),
        "MatMulBnb4" => Some(2),
        _ => None,
    }
    .filter(|&k| k > 1)
}

fn io(e: std::io::Error) -> Error {
    Error::Model(format!("reading the ONNX graph: {e}"))
}

fn bad(what: &str) -> Error {
    Error::Model(format!("malformed ONNX graph: {what}"))
}

/// `GraphProto`: `node` = 1, `initializer` = 5, `output` = 12 (`ValueInfoProto`: `name` = 1),
/// `sparse_initializer` = 15.
fn graph<R: Read + Seek>(r: &mut Proto<R>, end: u64, acc: &mut Acc) -> Result<()> {
    acc.depth += 1;
    while r.pos < end {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (12, 2) if acc.depth == 1 => {
                let end = r.varint()? + r.pos;
                while r.pos < end {
                    match r.key()? {
                        (1, 2) => {
                            let name = r.string("an output name")?;
                            acc.outputs.push(name);
                        }
                        (_, wire) => r.skip_value(wire)?,
                    }
                }
            }
            (1, 2) => {
                let end = r.varint()? + r.pos;
                node(r, end, acc)?;
            }
            (5, 2) => {
                let end = r.varint()? + r.pos;
                let (dims, t, name) = tensor(r, end)?;
                let n = acc.add(&dims, t);
                acc.named.insert(name, n);
            }
            (15, 2) => {
                let end = r.varint()? + r.pos;
                sparse(r, end, acc)?;
            }
            _ => r.skip_value(wire)?,
        }
    }
    acc.depth -= 1;
    Ok(())
}

/// `NodeProto`: `input` = 1, `op_type` = 4, `attribute` = 5 (`AttributeProto`: `name` = 1,
/// `i` = 3, `t` = 5, `g` = 6, `graphs` = 11: tensors count as weights, subgraphs are walked like
/// the main graph; the `bits` attribute and input 1 tell a packed weight).
fn node<R: Read + Seek>(r: &mut Proto<R>, end: u64, acc: &mut Acc) -> Result<()> {
    let (mut op, mut inputs, mut bits) = (String::new(), Vec::new(), None);
    while r.pos < end {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) if inputs.len() < 2 => inputs.push(r.string("an input name")?),
            (4, 2) => op = r.string("an op_type")?,
            (5, 2) => {
                let len = r.varint()?;
                let attr_end = r.pos + len;
                let (mut name, mut int) = (String::new(), None);
                while r.pos < attr_end {
                    let (f, w) = r.key()?;
                    match (f, w) {
                        (1, 2) => name = r.string("an attribute name")?,
                        (3, 0) => int = Some(r.varint()?),
                        (5, 2) => {
                            let end = r.varint()? + r.pos;
                            let (dims, t, _) = tensor(r, end)?;
                            acc.add(&dims, t);
                        }
                        (6 | 11, 2) => {
                            let end = r.varint()? + r.pos;
                            graph(r, end, acc)?;
                        }
                        _ => r.skip_value(w)?,
                    }
                }
                if name == "bits" {
                    bits = int;
                }
            }
            _ => r.skip_value(wire)?,
        }
    }
    if let (Some(k), Some(weight)) = (weights_per_element(&op, bits), inputs.get(1)) {
        acc.packed.insert(weight.clone(), k);
    }
    acc.ops.insert(op);
    Ok(())
}

/// `SparseTensorProto`: `values` = 1 (a tensor), `dims` = 3 (the dense shape).
fn sparse<R: Read + Seek>(r: &mut Proto<R>, end: u64, acc: &mut Acc) -> Result<()> {
    let (mut dims, mut t) = (Vec::new(), 0);
    while r.pos < end {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => {
                let end = r.varint()? + r.pos;
                t = tensor(r, end)?.1;
            }
            (3, _) => r.int64s(wire, &mut dims)?,
            _ => r.skip_value(wire)?,
        }
    }
    acc.add(&dims, t);
    Ok(())
}

/// `TensorProto`: `dims` = 1, `data_type` = 2, `name` = 8; everything else is skipped.
fn tensor<R: Read + Seek>(r: &mut Proto<R>, end: u64) -> Result<(Vec<i64>, i32, String)> {
    let (mut dims, mut t, mut name) = (Vec::new(), 0, String::new());
    while r.pos < end {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, _) => r.int64s(wire, &mut dims)?,
            (2, 0) => t = r.varint()? as i32,
            (8, 2) => name = r.string("a tensor name")?,
            _ => r.skip_value(wire)?,
        }
    }
    if r.pos != end {
        return Err(bad("a tensor overruns its message"));
    }
    Ok((dims, t, name))
}

/// A protobuf reader that knows its position and seeks over large payloads.
struct Proto<R> {
    inner: R,
    pos: u64,
}

impl<R: Read + Seek> Proto<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(io)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn key(&mut self) -> Result<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// A length-delimited string of at most 4 KiB (names and op types).
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.varint()?;
        if len > 4096 {
            return Err(bad(&format!("{what} longer than 4096 bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n <= 4096 {
            let mut buf = [0u8; 4096];
            self.read_exact(&mut buf[..n as usize])
        } else {
            let n = i64::try_from(n).map_err(|_| bad("field length"))?;
            self.inner.seek(SeekFrom::Current(n)).map_err(io)?;
            self.pos += n as u64;
            Ok(())
        }
    }

    fn skip_value(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.skip(8),
            2 => {
                let len = self.varint()?;
                self.skip(len)
            }
            5 => self.skip(4),
            _ => Err(bad("unsupported wire type")),
        }
    }

    /// A repeated int64 field, packed or not.
    fn int64s(&mut self, wire: u8, out: &mut Vec<i64>) -> Result<()> {
        match wire {
            0 => out.push(self.varint()? as i64),
            2 => {
                let len = self.varint()?;
                let end = self.pos + len;
                while self.pos < end {
                    out.push(self.varint()? as i64);
                }
            }
            _ => return Err(bad("dims of an unexpected wire type")),
        }
        Ok(())
    }
}

/// The weights of a loaded ONNX graph, as counted from its initializers (external data
/// included) without loading their data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WeightStats {
    /// Total number of weight elements (the parameter count).
    pub parameters: u64,
    /// Elements per ONNX `TensorProto.DataType` code, over weights of rank ≥ 2 (matrices and
    /// embedding tables: what decides the quantization).
    pub matrix_elements_by_type: Vec<(i32, u64)>,
    /// The graph multiplies by 4-bit weights packed two to a byte (`MatMulNBits`).
    pub packed_4bit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn tensor(dims: &[u64], t: i32, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut packed = Vec::new();
        for &d in dims {
            varint(d, &mut packed);
        }
        len_field(1, &packed, &mut out);
        varint(2 << 3, &mut out);
        varint(t as u64, &mut out);
        len_field(9, &vec![7u8; payload], &mut out);
        out
    }

    #[test]
    fn counts_initializers_and_names_the_quantization() {
        let mut g = Vec::new();
        len_field(5, &tensor(&[1000, 384], dtype::FLOAT, 10), &mut g); // embedding table
        len_field(5, &tensor(&[384, 384], dtype::INT8, 9000), &mut g);
        len_field(5, &tensor(&[384, 1536], dtype::INT8, 10), &mut g);
        len_field(5, &tensor(&[], dtype::FLOAT, 4), &mut g); // a scale
        let mut model = Vec::new();
        varint(1 << 3, &mut model); // ir_version
        varint(8, &mut model);
        len_field(7, &g, &mut model);
        let stats = read(std::io::Cursor::new(model)).unwrap().weights;
        assert_eq!(stats.parameters, 384_000 + 147_456 + 589_824 + 1);
        assert_eq!(quantization_label(&stats), Some("Q8_0"));
        assert_eq!(parameter_size(22_713_216), "22.7M");
        assert_eq!(parameter_size(567_754_752), "568M");
        assert_eq!(parameter_size(1_200_000_000), "1.2B");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read(std::io::Cursor::new(vec![0x3a, 0xff, 0xff, 0xff])).is_err());
        assert!(read(std::io::Cursor::new(vec![0x3a, 50, 1])).is_err());
    }

    /// A node with `op_type` and, optionally, a subgraph attribute.
    fn node(op: &str, subgraph: Option<&[u8]>) -> Vec<u8> {
        let mut n = Vec::new();
        len_field(1, b"x", &mut n);
        len_field(4, op.as_bytes(), &mut n);
        if let Some(g) = subgraph {
            let mut attr = Vec::new();
            len_field(1, b"then_branch", &mut attr);
            len_field(6, g, &mut attr);
            len_field(5, &attr, &mut n);
        }
        n
    }

    #[test]
    fn packed_4bit_weights_count_as_the_weights_they_hold() {
        let named = |name: &str, dims: &[u64]| {
            let mut t = tensor(dims, dtype::UINT8, 8);
            len_field(8, name.as_bytes(), &mut t);
            t
        };
        let matmul = |op: &str, weight: &str, bits: Option<u64>| {
            let mut n = Vec::new();
            len_field(1, b"x", &mut n);
            len_field(1, weight.as_bytes(), &mut n);
            len_field(4, op.as_bytes(), &mut n);
            if let Some(b) = bits {
                let mut attr = Vec::new();
                len_field(1, b"bits", &mut attr);
                varint(3 << 3, &mut attr);
                varint(b, &mut attr);
                len_field(5, &attr, &mut n);
            }
            n
        };
        let mut g = Vec::new();
        len_field(1, &matmul("MatMulNBits", "w_q4", Some(4)), &mut g);
        len_field(1, &matmul("MatMulNBits", "w_q2", Some(2)), &mut g);
        len_field(1, &matmul("MatMulBnb4", "w_bnb4", None), &mut g);
        len_field(5, &named("w_q4", &[64, 2, 16]), &mut g); // 2,048 bytes: 4,096 weights
        len_field(5, &named("w_q2", &[8, 8]), &mut g); // 64 bytes: 256 weights
        len_field(5, &named("w_bnb4", &[512]), &mut g); // 512 bytes: 1,024 weights
        len_field(5, &named("scales", &[64, 2]), &mut g); // not packed: 128
        let mut model = Vec::new();
        len_field(7, &g, &mut model);
        let stats = read(std::io::Cursor::new(model)).unwrap().weights;
        assert_eq!(stats.parameters, 4096 + 256 + 1024 + 128);
        assert_eq!(quantization_label(&stats), Some("Q4_0"));
    }

    #[test]
    fn op_types_include_subgraphs_and_decide_the_facts() {
        let mut branch = Vec::new();
        len_field(1, &node("Softmax", None), &mut branch);
        let mut g = Vec::new();
        len_field(1, &node("DynamicQuantizeLinear", None), &mut g);
        len_field(5, &tensor(&[4, 4], dtype::FLOAT, 64), &mut g); // an initializer between nodes
        len_field(1, &node("If", Some(&branch)), &mut g);
        let mut model = Vec::new();
        len_field(2, b"test", &mut model); // producer_name
        len_field(7, &g, &mut model);
        let summary = read(std::io::Cursor::new(model)).unwrap();
        let ops: Vec<&str> = summary.op_types.iter().map(String::as_str).collect();
        assert_eq!(ops, ["DynamicQuantizeLinear", "If", "Softmax"]);
        assert_eq!(summary.weights.parameters, 16);
        let facts = summary.facts();
        assert!(!facts.batch_invariant);
        assert_eq!(facts.attention, crate::spec::AttentionKind::Plain);
    }
}
