//! A model as sentence-transformers defines it: `modules.json` lists the modules in order
//! (Transformer, Pooling, Dense…, Normalize), `1_Pooling/config.json` says how token rows
//! become one vector, each Dense module's `config.json` its projection.
//!
//! embedfn honours these files or refuses the model at start, naming the file and the field:
//! it never serves a vector other than the one sentence-transformers would compute. Pooling by
//! mean, CLS, max or last token is done by the core ([`crate::pooling`]); Dense projections are
//! taken from the graph itself when its export has them (a `sentence_embedding` output, as the
//! community ONNX exports of EmbeddingGemma do), since the core runs no weights of its own.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pooling::Pooling;

/// The graph output that holds the whole module pipeline's result (Pooling, Dense, Normalize)
/// in sentence-transformers ONNX exports.
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// What the sentence-transformers files say about the vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules {
    /// How token rows are pooled.
    pub pooling: Pooling,
    /// The width after the last Dense module, when there are Dense modules: the vector must
    /// then come from the graph's [`SENTENCE_EMBEDDING`] output.
    pub dense_out: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PoolingConfig {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
    include_prompt: Option<bool>,
}

#[derive(Deserialize)]
struct DenseConfig {
    out_features: usize,
    #[serde(default)]
    activation_function: Option<String>,
}

const POOLING: &str = "1_Pooling/config.json";

fn refuse(file: &str, what: impl std::fmt::Display) -> Error {
    Error::Model(format!("{file}: {what}"))
}

/// The directories of the modules `modules.json` lists (`1_Pooling`, `2_Dense`, …), each with
/// its own `config.json`; empty when the file cannot be read.
pub fn module_paths(modules_json: &str) -> Vec<String> {
    serde_json::from_str::<Vec<Module>>(modules_json)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.path)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Reads `modules.json` (with each module's `config.json`, by its path) and the pooling
/// config. `has_prompts`: the model has prompts, which a pooling that leaves them out
/// (`include_prompt: false`) would need cut from the pooled rows.
pub fn read(
    modules_json: Option<&str>,
    pooling_json: Option<&str>,
    module_config: impl Fn(&str) -> Option<String>,
    has_prompts: bool,
) -> Result<Modules> {
    let pooling = pooling_mode(pooling_json, has_prompts)?;
    let Some(text) = modules_json else {
        return Ok(Modules {
            pooling,
            dense_out: None,
        });
    };
    let modules: Vec<Module> = serde_json::from_str(text).map_err(|e| refuse("modules.json", e))?;
    let mut dense_out = None;
    for m in &modules {
        let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
        match kind {
            "Transformer" | "Pooling" | "Normalize" => {}
            "Dense" => {
                let file = format!("{}/config.json", m.path);
                let config = module_config(&m.path)
                    .ok_or_else(|| refuse(&file, "missing (modules.json lists a Dense module)"))?;
                let dense: DenseConfig =
                    serde_json::from_str(&config).map_err(|e| refuse(&file, e))?;
                let activation = dense.activation_function.as_deref().unwrap_or("Identity");
                if !activation.ends_with("Identity") && !activation.ends_with("Tanh") {
                    return Err(refuse(
                        &file,
                        format!("activation_function {activation} is not supported"),
                    ));
                }
                dense_out = Some(dense.out_features);
            }
            other => {
                return Err(refuse(
                    "modules.json",
                    format!(
                        "module {} ({}) is not one embedfn applies (Transformer, Pooling, Dense, \
                         Normalize)",
                        m.path, other
                    ),
                ))
            }
        }
    }
    Ok(Modules { pooling, dense_out })
}

/// The one pooling mode `1_Pooling/config.json` sets (mean when there is no such file).
fn pooling_mode(text: Option<&str>, has_prompts: bool) -> Result<Pooling> {
    let Some(text) = text else {
        return Ok(Pooling::Mean);
    };
    let c: PoolingConfig = serde_json::from_str(text).map_err(|e| refuse(POOLING, e))?;
    for (set, field) in [
        (
            c.pooling_mode_mean_sqrt_len_tokens,
            "pooling_mode_mean_sqrt_len_tokens",
        ),
        (
            c.pooling_mode_weightedmean_tokens,
            "pooling_mode_weightedmean_tokens",
        ),
    ] {
        if set {
            return Err(refuse(
                POOLING,
                format!("{field} is not supported (embedfn pools by mean, cls, max or last token)"),
            ));
        }
    }
    let modes: Vec<Pooling> = [
        (c.pooling_mode_cls_token, Pooling::Cls),
        (c.pooling_mode_mean_tokens, Pooling::Mean),
        (c.pooling_mode_max_tokens, Pooling::Max),
        (c.pooling_mode_lasttoken, Pooling::LastToken),
    ]
    .into_iter()
    .filter_map(|(set, mode)| set.then_some(mode))
    .collect();
    let pooling =
        match modes[..] {
            [] => Pooling::Mean,
            [one] => one,
            _ => return Err(refuse(
                POOLING,
                "sets several pooling_mode_* fields (their vectors concatenated) — not supported",
            )),
        };
    // Leaving the prompt out matters only where the pooled rows include it.
    if c.include_prompt == Some(false)
        && has_prompts
        && matches!(pooling, Pooling::Mean | Pooling::Max)
    {
        return Err(refuse(
            POOLING,
            "include_prompt false (pooling without the prompt's tokens) is not supported",
        ));
    }
    Ok(pooling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooling(json: &str) -> Result<Pooling> {
        read(None, Some(json), |_| None, true).map(|m| m.pooling)
    }

    #[test]
    fn every_supported_mode_and_the_default() {
        assert_eq!(
            read(None, None, |_| None, false).unwrap().pooling,
            Pooling::Mean
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_cls_token": true}"#).unwrap(),
            Pooling::Cls
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_mean_tokens": true}"#).unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_max_tokens": true}"#).unwrap(),
            Pooling::Max
        );
        assert_eq!(
            pooling(r#"{"pooling_mode_lasttoken": true, "include_prompt": true}"#).unwrap(),
            Pooling::LastToken
        );
    }

    #[test]
    fn what_cannot_be_honoured_names_the_file_and_field() {
        let e = pooling(r#"{"pooling_mode_weightedmean_tokens": true}"#).unwrap_err();
        assert!(e
            .to_string()
            .contains("1_Pooling/config.json: pooling_mode_weightedmean_tokens"));
        let e = pooling(r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#);
        assert!(e.unwrap_err().to_string().contains("several"));
        let e = pooling(r#"{"pooling_mode_mean_tokens": true, "include_prompt": false}"#);
        assert!(e.unwrap_err().to_string().contains("include_prompt"));
        let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                          {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                          {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#;
        let e = read(Some(modules), None, |_| None, false).unwrap_err();
        assert!(e.to_string().contains("2_Dense/config.json"), "{e}");
        let odd = r#"[{"path":"2_LayerNorm","type":"sentence_transformers.models.LayerNorm"}]"#;
        assert!(read(Some(odd), None, |_| None, false).is_err());
    }

    #[test]
    fn dense_modules_give_the_output_width() {
        let modules = r#"[{"path":"","type":"sentence_transformers.models.Transformer"},
                          {"path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                          {"path":"2_Dense","type":"sentence_transformers.models.Dense"},
                          {"path":"3_Dense","type":"sentence_transformers.models.Dense"},
                          {"path":"4_Normalize","type":"sentence_transformers.models.Normalize"}]"#;
        let config = |path: &str| {
            Some(match path {
                "2_Dense" => r#"{"in_features":768,"out_features":3072,"bias":false,"activation_function":"torch.nn.modules.linear.Identity"}"#.to_string(),
                _ => r#"{"in_features":3072,"out_features":768,"bias":false}"#.to_string(),
            })
        };
        let m = read(Some(modules), None, config, true).unwrap();
        assert_eq!((m.pooling, m.dense_out), (Pooling::Mean, Some(768)));
        assert_eq!(
            module_paths(modules),
            ["1_Pooling", "2_Dense", "3_Dense", "4_Normalize"]
        );
    }
}
