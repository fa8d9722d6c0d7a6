//! Reading a Hugging Face style model directory from disk (feature `fs`).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};
use crate::memory::GraphFacts;
use crate::registry::ModelInfo;
use crate::spec::{ModelFiles, Quantization};
use crate::time::rfc3339;

/// Reads the files [`crate::ModelSpec::from_files`] and [`crate::TextTokenizer`] need.
pub fn read_model_dir(dir: &Path) -> Result<ModelFiles> {
    let required = |name: &str| {
        fs::read(dir.join(name))
            .map_err(|e| Error::Model(format!("{}: {e}", dir.join(name).display())))
    };
    let optional = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let config = required("config.json")?;
    Ok(ModelFiles {
        tokenizer_json: required("tokenizer.json")?,
        config_json: String::from_utf8(config)
            .map_err(|_| Error::Model("config.json is not UTF-8".into()))?,
        pooling_json: optional("1_Pooling/config.json"),
        sentence_bert_json: optional("sentence_bert_config.json"),
        sentence_transformers_json: optional("config_sentence_transformers.json"),
        tokenizer_config_json: optional("tokenizer_config.json"),
    })
}

/// The ONNX file for a quantization choice: `onnx/<file>`, or `<file>` at the top of the
/// directory (some exports put it there).
pub fn onnx_path(dir: &Path, quantization: Quantization) -> Result<PathBuf> {
    let name = quantization.file_name();
    [dir.join("onnx").join(name), dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Model(format!(
                "{}: no onnx/{name} (ONNX_QUANTIZATION={}); files there: {}",
                dir.display(),
                quantization.name(),
                list_onnx(dir)
            ))
        })
}

/// The attention-fused sibling of an ONNX file that `scripts/fuse_attention.py` writes:
/// `onnx/model.onnx` → `onnx/model.fused.onnx`, `onnx/model_int8.onnx` →
/// `onnx/model_int8.fused.onnx`. ONNX Runtime backends prefer it when it exists (the fused
/// operator, `com.microsoft.MultiHeadAttention`, is ONNX Runtime's own: tract does not run it).
pub fn fused_path(onnx: &Path) -> PathBuf {
    let stem = onnx
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    onnx.with_file_name(format!("{stem}.fused.onnx"))
}

/// [`fused_path`] when that file exists, else `onnx` itself.
pub fn prefer_fused(onnx: &Path) -> PathBuf {
    let fused = fused_path(onnx);
    if fused.is_file() {
        fused
    } else {
        onnx.to_path_buf()
    }
}

fn list_onnx(dir: &Path) -> String {
    let mut names: Vec<String> = [dir.join("onnx"), dir.to_path_buf()]
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx") && !n.ends_with(".fused.onnx"))
        .collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Total bytes of an ONNX file and its external data (`<file>_data`, `<file>.data`).
pub fn onnx_size(path: &Path) -> u64 {
    let size = |p: PathBuf| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let name = path.as_os_str().to_string_lossy().into_owned();
    size(path.to_path_buf())
        + size(format!("{name}_data").into())
        + size(format!("{name}.data").into())
}

/// What is reported about a served model (`/api/tags`, `/v1/models`): `name` as listed, the
/// ONNX file's size and time, and a digest of what identifies the loaded file (`id`, size, time).
pub fn model_info(name: String, id: &str, onnx: &Path, quantization: Quantization) -> ModelInfo {
    let size = onnx_size(onnx);
    let modified = fs::metadata(onnx)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    ModelInfo {
        name,
        size,
        modified_at: rfc3339(modified),
        digest: digest(id, size, modified),
        quantization,
    }
}

/// A stable 64-hex-digit digest (FNV-1a, four lanes): cheap, unlike hashing gigabytes of weights
/// at start-up.
fn digest(id: &str, size: u64, modified: u64) -> String {
    let key = format!("{id}\0{size}\0{modified}");
    (0u64..4)
        .map(|lane| {
            let h = key.bytes().fold(0xcbf2_9ce4_8422_2325 ^ lane, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{h:016x}")
        })
        .collect()
}

/// The [`GraphFacts`] of an ONNX file, from its nodes' `op_type`s. Only the graph's node
/// records are read; everything else (initializers: the weights, gigabytes for big models) is
/// skipped by seeking, so this takes milliseconds whatever the file's size.
pub fn graph_facts(path: &Path) -> Result<GraphFacts> {
    let file =
        fs::File::open(path).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    let mut reader = std::io::BufReader::new(file);
    let ops = onnx_op_types(&mut reader)
        .map_err(|e| Error::Model(format!("{}: not a readable ONNX file: {e}", path.display())))?;
    Ok(GraphFacts::from_op_types(ops.iter().map(String::as_str)))
}

/// The `op_type` of every node of an ONNX `ModelProto`'s main graph (field 7, `GraphProto`,
/// whose field 1 is `NodeProto`, whose field 4 is `op_type`).
fn onnx_op_types<R: Read + Seek>(r: &mut R) -> std::io::Result<Vec<String>> {
    let mut ops = Vec::new();
    let end = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut at = 0u64;
    while at < end {
        let (field, wire) = tag(r, &mut at)?;
        if field == 7 && wire == 2 {
            let len = varint(r, &mut at)?;
            let graph_end = at + len;
            while at < graph_end {
                let (field, wire) = tag(r, &mut at)?;
                if field == 1 && wire == 2 {
                    let len = varint(r, &mut at)?;
                    let mut node = vec![0; usize::try_from(len).map_err(invalid)?];
                    r.read_exact(&mut node)?;
                    at += len;
                    if let Some(op) = node_op_type(&node)? {
                        ops.push(op);
                    }
                } else {
                    skip(r, &mut at, wire)?;
                }
            }
        } else {
            skip(r, &mut at, wire)?;
        }
    }
    Ok(ops)
}

fn node_op_type(node: &[u8]) -> std::io::Result<Option<String>> {
    let mut r = std::io::Cursor::new(node);
    let mut at = 0u64;
    while at < node.len() as u64 {
        let (field, wire) = tag(&mut r, &mut at)?;
        if field == 4 && wire == 2 {
            let len = varint(&mut r, &mut at)? as usize;
            let start = at as usize;
            let bytes = node
                .get(start..start + len)
                .ok_or_else(|| invalid("short op_type"))?;
            return Ok(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
        skip(&mut r, &mut at, wire)?;
    }
    Ok(None)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn varint<R: Read>(r: &mut R, at: &mut u64) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        r.read_exact(&mut byte)?;
        *at += 1;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("varint too long"))
}

fn tag<R: Read>(r: &mut R, at: &mut u64) -> std::io::Result<(u64, u8)> {
    let t = varint(r, at)?;
    Ok((t >> 3, (t & 7) as u8))
}

/// Skips one field's value of wire type `wire`.
fn skip<R: Read + Seek>(r: &mut R, at: &mut u64, wire: u8) -> std::io::Result<()> {
    let n = match wire {
        0 => {
            varint(r, at)?;
            return Ok(());
        }
        1 => 8,
        2 => varint(r, at)?,
        5 => 4,
        other => return Err(invalid(format!("unsupported wire type {other}"))),
    };
    r.seek(SeekFrom::Current(i64::try_from(n).map_err(invalid)?))?;
    *at += n;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_file_sits_beside_every_variant() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            fused_path(&p("m/onnx/model.onnx")),
            p("m/onnx/model.fused.onnx")
        );
        assert_eq!(
            fused_path(&p("m/onnx/model_int8.onnx")),
            p("m/onnx/model_int8.fused.onnx")
        );
        assert_eq!(
            prefer_fused(&p("/nonexistent/model.onnx")),
            p("/nonexistent/model.onnx")
        );
    }

    /// A length-delimited field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn op_types_come_from_the_main_graph_and_weights_are_skipped() {
        let node = |op: &str| field(1, &[field(1, b"x"), field(4, op.as_bytes())].concat());
        let graph = [
            node("DynamicQuantizeLinear"),
            field(5, &[7; 100]), // an initializer
            node("Softmax"),
        ]
        .concat();
        // ir_version (varint), producer_name, then the graph.
        let model = [vec![0x08, 9], field(2, b"test"), field(7, &graph)].concat();
        let ops = onnx_op_types(&mut std::io::Cursor::new(model)).unwrap();
        assert_eq!(ops, ["DynamicQuantizeLinear", "Softmax"]);
        let facts = GraphFacts::from_op_types(ops.iter().map(String::as_str));
        assert!(!facts.batch_invariant);
        assert!(onnx_op_types(&mut std::io::Cursor::new(vec![0x3a, 50, 1])).is_err());
    }
}
