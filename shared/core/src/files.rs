//! Reading a Hugging Face style model directory from disk (feature `fs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};
use crate::onnx_graph::{self, GraphSummary, WeightStats};
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
    let modules_json = optional("modules.json");
    // Each listed module's own config (Dense projections say their width there).
    let module_configs = modules_json
        .as_deref()
        .map(crate::sentence::module_paths)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| Some((p.clone(), optional(&format!("{p}/config.json"))?)))
        .collect();
    Ok(ModelFiles {
        tokenizer_json: required("tokenizer.json")?,
        config_json: String::from_utf8(config)
            .map_err(|_| Error::Model("config.json is not UTF-8".into()))?,
        pooling_json: optional("1_Pooling/config.json"),
        sentence_bert_json: optional("sentence_bert_config.json"),
        sentence_transformers_json: optional("config_sentence_transformers.json"),
        tokenizer_config_json: optional("tokenizer_config.json"),
        modules_json,
        module_configs,
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
/// ONNX file's size and time, a digest of what identifies the loaded file (`id`, size, time),
/// and its weights as counted by [`read_graph`].
pub fn model_info(
    name: String,
    id: &str,
    onnx: &Path,
    quantization: Quantization,
    weights: Option<WeightStats>,
) -> ModelInfo {
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
        weights,
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

/// What [`crate::onnx_graph`] reads off an ONNX file (weights counted, op types), without
/// loading its weights.
pub fn read_graph(path: &Path) -> Result<GraphSummary> {
    let file =
        fs::File::open(path).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    onnx_graph::read(std::io::BufReader::new(file))
        .map_err(|e| Error::Model(format!("{}: not a readable ONNX file: {e}", path.display())))
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
}
