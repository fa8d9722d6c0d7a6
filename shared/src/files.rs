//! Reading a Hugging Face style model directory from disk (feature `fs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};
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

fn list_onnx(dir: &Path) -> String {
    let mut names: Vec<String> = [dir.join("onnx"), dir.to_path_buf()]
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
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
/// and its weights as counted from the graph's initializers ([`crate::onnx_weights`]).
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
        weights: fs::File::open(onnx)
            .ok()
            .and_then(|f| crate::onnx_weights::count(std::io::BufReader::new(f)).ok()),
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
