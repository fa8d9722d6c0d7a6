//! The model spec: everything the core needs to know about a model, derived from the files of a
//! Hugging Face style model directory rather than hard-coded for one model.
//!
//! | fact | read from |
//! |---|---|
//! | kind | `config.json` `architectures` (`…ForSequenceClassification` → cross-encoder) |
//! | pooling | `1_Pooling/config.json` (mean, cls, max, last token: [`crate::sentence`]), else mean |
//! | Dense modules | `modules.json` and each Dense module's `config.json`: the vector is the graph's `sentence_embedding` output, as wide as the last Dense |
//! | max length | `sentence_bert_config.json` `max_seq_length`, else `tokenizer_config.json` `model_max_length`, else `max_position_embeddings` (less the RoBERTa padding offset) |
//! | dims | the last Dense module's `out_features`, else `config.json` `hidden_size` |
//! | Matryoshka dims | `config.json` `matryoshka_dimensions` |
//! | tasks | `config.json` `lora_adaptations` (index = `task_id`) |
//! | heads, FFN width | `config.json` `num_attention_heads`, `intermediate_size` |
//! | instructions | `config.json` `task_instructions`, else `config_sentence_transformers.json` `prompts` (its `default_prompt_name` the default) |

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pooling::Pooling;

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Text → vector (token-level or pooled output).
    Embedding,
    /// (query, document) → relevance logit.
    CrossEncoder,
}

/// The text contents of a model directory's files (no I/O here: adapters read them).
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    /// `tokenizer.json` (required).
    pub tokenizer_json: Vec<u8>,
    /// `config.json` (required).
    pub config_json: String,
    /// `1_Pooling/config.json`.
    pub pooling_json: Option<String>,
    /// `sentence_bert_config.json`.
    pub sentence_bert_json: Option<String>,
    /// `config_sentence_transformers.json`.
    pub sentence_transformers_json: Option<String>,
    /// `tokenizer_config.json`.
    pub tokenizer_config_json: Option<String>,
    /// `modules.json`.
    pub modules_json: Option<String>,
    /// Each module's `config.json`, by the module's path (`2_Dense`).
    pub module_configs: Vec<(String, String)>,
}

/// Everything the core derives from a model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Embedding model or cross-encoder.
    pub kind: ModelKind,
    /// `model_type` from config.json (e.g. `bert`, `xlm-roberta`).
    pub model_type: String,
    /// How token embeddings are pooled.
    pub pooling: Pooling,
    /// The vector is the graph's `sentence_embedding` output (Dense modules follow pooling).
    pub sentence_output: bool,
    /// `config_sentence_transformers.json` `default_prompt_name`.
    pub default_prompt: Option<String>,
    /// `config.json` `pad_token_id`.
    pub pad_token_id: Option<i64>,
    /// `tokenizer_config.json` `padding_side` is `left` (Qwen3-Embedding, Qwen3-Reranker).
    pub pad_left: bool,
    /// The longest token sequence the model takes, special tokens included.
    pub max_length: usize,
    /// Output width (`hidden_size`).
    pub dims: usize,
    /// Matryoshka dimensions the model was trained for (empty when none).
    pub matryoshka_dims: Vec<usize>,
    /// Task adapters; the index is the graph's `task_id`.
    pub tasks: Vec<String>,
    /// Instruction prefix per task (absent or empty: none).
    pub task_instructions: BTreeMap<String, String>,
    /// Vocabulary size, for validating token-id input.
    pub vocab_size: usize,
    /// Parameter count estimate for `/api/show` and `/api/tags`, when known from the config.
    pub num_layers: Option<usize>,
    /// `num_attention_heads` (memory estimate).
    pub num_attention_heads: Option<usize>,
    /// `intermediate_size`, the feed-forward width (memory estimate).
    pub intermediate_size: Option<usize>,
    /// Facts read off the ONNX graph by the adapter (batch invariance, attention kind); the
    /// cautious default until then.
    pub graph: GraphFacts,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: String,
    hidden_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    pad_token_id: Option<usize>,
    vocab_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    #[serde(default)]
    matryoshka_dimensions: Vec<usize>,
    #[serde(default)]
    lora_adaptations: Vec<String>,
    #[serde(default)]
    task_instructions: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
    padding_side: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de> + Default>(name: &str, text: Option<&str>) -> Result<T> {
    text.map_or(Ok(T::default()), |t| {
        serde_json::from_str(t).map_err(|e| Error::Model(format!("{name}: {e}")))
    })
}

impl ModelSpec {
    /// Derives the spec from a model directory's files.
    pub fn from_files(files: &ModelFiles) -> Result<Self> {
        let config: Config = parse("config.json", Some(&files.config_json))?;
        let sbert: SentenceBertConfig = parse(
            "sentence_bert_config.json",
            files.sentence_bert_json.as_deref(),
        )?;
        let st: SentenceTransformersConfig = parse(
            "config_sentence_transformers.json",
            files.sentence_transformers_json.as_deref(),
        )?;
        let tok: TokenizerConfig = parse(
            "tokenizer_config.json",
            files.tokenizer_config_json.as_deref(),
        )?;

        let kind = if config
            .architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
        {
            ModelKind::CrossEncoder
        } else {
            ModelKind::Embedding
        };
        let modules = crate::sentence::read(
            files.modules_json.as_deref(),
            files.pooling_json.as_deref(),
            |path| {
                files
                    .module_configs
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, c)| c.clone())
            },
            !st.prompts.is_empty(),
        )?;
        let hidden = config
            .hidden_size
            .ok_or_else(|| Error::Model("config.json: no hidden_size".into()))?;
        let dims = modules.dense_out.unwrap_or(hidden);
        let default_prompt = st.default_prompt_name.clone();
        let max_length = sbert
            .max_seq_length
            .or_else(|| {
                // tokenizer_config.json often says 1e30 for "no limit": ignore such values.
                tok.model_max_length
                    .filter(|&m| m > 0.0 && m < 1e6)
                    .map(|m| m as usize)
            })
            .or_else(|| position_limit(&config))
            .unwrap_or(512);
        let pad_left = match tok.padding_side.as_deref() {
            None | Some("right") => false,
            Some("left") => true,
            Some(other) => {
                return Err(Error::Model(format!(
                    "tokenizer_config.json: padding_side '{other}' is neither 'left' nor 'right'"
                )))
            }
        };
        let task_instructions = if config.task_instructions.is_empty() {
            st.prompts
        } else {
            config.task_instructions
        };
        Ok(ModelSpec {
            kind,
            model_type: config.model_type,
            pooling: modules.pooling,
            sentence_output: modules.dense_out.is_some(),
            default_prompt,
            pad_token_id: config.pad_token_id.and_then(|p| i64::try_from(p).ok()),
            pad_left,
            max_length,
            dims,
            matryoshka_dims: config.matryoshka_dimensions,
            tasks: config.lora_adaptations,
            task_instructions,
            vocab_size: config.vocab_size.unwrap_or(usize::MAX),
            num_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            intermediate_size: config.intermediate_size,
            graph: GraphFacts::default(),
        })
    }

    /// Whether the graph (its facts in [`ModelSpec::graph`]) gives what the model files ask
    /// for: Dense modules after pooling need the graph's `sentence_embedding` output.
    pub fn check_graph(&self) -> Result<()> {
        if self.sentence_output && !self.graph.sentence_embedding {
            return Err(Error::Model(format!(
                "modules.json lists Dense modules after pooling, which embedfn takes from the \
                 graph's `{}` output, and this ONNX graph has none (export the model with \
                 sentence-transformers' ONNX export, which includes them)",
                crate::sentence::SENTENCE_EMBEDDING
            )));
        }
        Ok(())
    }

    /// The `task_id` of a task name, or a 400 listing the valid ones.
    pub fn task_id(&self, task: &str) -> Result<i64> {
        match self.tasks.iter().position(|t| t == task) {
            Some(i) => Ok(i as i64),
            None if self.tasks.is_empty() => Err(Error::bad_request(format!(
                "unknown task '{task}': this model has no task adapters"
            ))),
            None => Err(Error::bad_request(format!(
                "unknown task '{task}': valid tasks are {}",
                self.tasks.join(", ")
            ))),
        }
    }

    /// The instruction prefix of a task ("" when it has none).
    pub fn instruction(&self, task: &str) -> &str {
        self.task_instructions.get(task).map_or("", String::as_str)
    }
}

/// RoBERTa-family models number positions from `pad_token_id + 1`, so `max_position_embeddings`
/// 514 means 512 usable tokens (8194 → 8192 for jina-embeddings-v3).
fn position_limit(config: &Config) -> Option<usize> {
    let positions = config.max_position_embeddings?;
    let offset = if config.model_type.contains("roberta") {
        config.pad_token_id.unwrap_or(1) + 1
    } else {
        0
    };
    Some(positions.saturating_sub(offset))
}

/// The `ONNX_QUANTIZATION` choice: which `onnx/model*.onnx` file a model directory is run
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// `model.onnx`
    #[default]
    None,
    /// `model_fp16.onnx`
    Fp16,
    /// `model_int8.onnx`
    Int8,
    /// `model_uint8.onnx`
    Uint8,
    /// `model_quantized.onnx`
    Quantized,
    /// `model_q4.onnx`
    Q4,
    /// `model_bnb4.onnx`
    Bnb4,
}

impl Quantization {
    /// Every name accepted by [`Quantization::parse`].
    pub const NAMES: [&'static str; 7] =
        ["none", "fp16", "int8", "uint8", "quantized", "q4", "bnb4"];

    /// Parses an `ONNX_QUANTIZATION` value.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Self::None,
            "fp16" => Self::Fp16,
            "int8" => Self::Int8,
            "uint8" => Self::Uint8,
            "quantized" => Self::Quantized,
            "q4" => Self::Q4,
            "bnb4" => Self::Bnb4,
            other => {
                return Err(Error::Model(format!(
                    "unknown ONNX_QUANTIZATION '{other}': expected one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// The `ONNX_QUANTIZATION` name of this choice.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Fp16 => "fp16",
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Quantized => "quantized",
            Self::Q4 => "q4",
            Self::Bnb4 => "bnb4",
        }
    }

    /// The ONNX file name (under `onnx/`) for this choice.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::None => "model.onnx",
            Self::Fp16 => "model_fp16.onnx",
            Self::Int8 => "model_int8.onnx",
            Self::Uint8 => "model_uint8.onnx",
            Self::Quantized => "model_quantized.onnx",
            Self::Q4 => "model_q4.onnx",
            Self::Bnb4 => "model_bnb4.onnx",
        }
    }

    /// The name used in `/api/tags` `quantization_level`.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "F32",
            Self::Fp16 => "F16",
            Self::Int8 | Self::Quantized => "Q8_0",
            Self::Uint8 => "U8",
            Self::Q4 | Self::Bnb4 => "Q4_0",
        }
    }
}

/// How a graph computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKind {
    /// No attention operator at all (e.g. the pooling-only test fixtures).
    None,
    /// MatMul → Softmax → MatMul: `O(batch · heads · seq²)` memory.
    #[default]
    Plain,
    /// A fused attention operator (`Attention`, `MultiHeadAttention`, …): `O(batch · seq · hidden)`.
    Fused,
    /// Both, as `scripts/optimize-model.sh` writes them: an unpadded pass takes the fused
    /// operator and a padded batch the plain subgraph. A lone sequence (the long inputs) is
    /// always unpadded: fused; several are counted as plain.
    FusedWhenAlone,
}

/// Facts about a model graph that change how it may be run. Unknown graphs get the cautious
/// default: batch-invariant, plain attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphFacts {
    /// Whether a sequence's result is independent of what shares its pass. Per-tensor dynamic
    /// quantization (`DynamicQuantizeLinear`, from `quantize_dynamic`) picks one activation
    /// scale for the whole padded batch, so such graphs run one sequence per pass.
    pub batch_invariant: bool,
    /// The attention the graph computes.
    pub attention: AttentionKind,
    /// The graph has a `sentence_embedding` output (sentence-transformers exports: pooling,
    /// Dense and Normalize inside the graph).
    pub sentence_embedding: bool,
    /// `[seq, seq]` score blocks a fused attention operator still holds at once: ONNX
    /// Runtime's CPU `GroupQueryAttention` computes one head's scores at a time on each
    /// intra-op thread (measured on the 0.6B decoder with 2 threads: 1.1 GiB a pass at 8192
    /// tokens, 14.8 GiB at 32,768). 1 per thread from the graph; the adapter multiplies by its
    /// threads. 0 for the flash-tiled `MultiHeadAttention`.
    pub score_blocks: u32,
}

impl Default for GraphFacts {
    fn default() -> Self {
        Self {
            batch_invariant: true,
            attention: AttentionKind::Plain,
            sentence_embedding: false,
            score_blocks: 0,
        }
    }
}

/// Operators that compute attention fused.
const FUSED: [&str; 5] = [
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "PackedMultiHeadAttention",
    "PackedAttention",
];

impl GraphFacts {
    /// The facts of a graph with these node `op_type`s. A `Softmax` anywhere counts as plain
    /// attention (the cautious reading when a graph has both).
    pub fn from_op_types<'a>(ops: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut dynamic, mut softmax, mut fused, mut blocks) = (false, false, false, 0);
        for op in ops {
            match op {
                "DynamicQuantizeLinear" => dynamic = true,
                "Softmax" => softmax = true,
                "GroupQueryAttention" => (fused, blocks) = (true, 1),
                _ if FUSED.contains(&op) => fused = true,
                _ => {}
            }
        }
        Self {
            sentence_embedding: false,
            score_blocks: blocks,
            batch_invariant: !dynamic,
            attention: if softmax && fused {
                AttentionKind::FusedWhenAlone
            } else if softmax {
                AttentionKind::Plain
            } else if fused {
                AttentionKind::Fused
            } else {
                AttentionKind::None
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(config: &str) -> ModelFiles {
        ModelFiles {
            config_json: config.into(),
            ..ModelFiles::default()
        }
    }

    #[test]
    fn jina_v3_like_config() {
        let spec = ModelSpec::from_files(&files(
            r#"{"architectures":["XLMRobertaModel"],"model_type":"xlm-roberta","hidden_size":1024,
            "max_position_embeddings":8194,"pad_token_id":1,"lora_adaptations":["retrieval.query",
            "retrieval.passage","separation","classification","text-matching"],
            "matryoshka_dimensions":[32,64,128,256,512,768,1024],
            "task_instructions":{"retrieval.query":"Q: ","retrieval.passage":"P: "}}"#,
        ))
        .unwrap();
        assert_eq!(spec.kind, ModelKind::Embedding);
        assert_eq!(spec.max_length, 8192);
        assert_eq!(spec.task_id("separation").unwrap(), 2);
        assert_eq!(spec.instruction("retrieval.query"), "Q: ");
        assert_eq!(spec.instruction("separation"), "");
        let err = spec.task_id("nope").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err
            .to_string()
            .contains("retrieval.query, retrieval.passage"));
    }

    #[test]
    fn padding_side_comes_from_tokenizer_config() {
        let config = r#"{"architectures":["Qwen3Model"],"hidden_size":64}"#;
        let with = |side: &str| {
            let mut f = files(config);
            f.tokenizer_config_json = Some(format!(r#"{{"padding_side":"{side}"}}"#));
            ModelSpec::from_files(&f)
        };
        assert!(with("left").unwrap().pad_left);
        assert!(!with("right").unwrap().pad_left);
        assert!(!ModelSpec::from_files(&files(config)).unwrap().pad_left);
        let err = with("middle").unwrap_err().to_string();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("padding_side"),
            "{err}"
        );
    }

    #[test]
    fn cross_encoder_and_sbert_limits() {
        let mut f = files(
            r#"{"architectures":["XLMRobertaForSequenceClassification"],"model_type":"xlm-roberta",
            "hidden_size":768,"max_position_embeddings":1026}"#,
        );
        let spec = ModelSpec::from_files(&f).unwrap();
        assert_eq!(spec.kind, ModelKind::CrossEncoder);
        assert_eq!(spec.max_length, 1024);
        f.sentence_bert_json = Some(r#"{"max_seq_length":256}"#.into());
        f.pooling_json = Some(r#"{"pooling_mode_cls_token":true}"#.into());
        let spec = ModelSpec::from_files(&f).unwrap();
        assert_eq!((spec.max_length, spec.pooling), (256, Pooling::Cls));
    }

    #[test]
    fn quantization_names_map_to_seed_files() {
        assert_eq!(
            Quantization::parse("fp16").unwrap().file_name(),
            "model_fp16.onnx"
        );
        assert_eq!(Quantization::parse("").unwrap().file_name(), "model.onnx");
        assert!(Quantization::parse("q3").is_err());
        for name in Quantization::NAMES {
            assert_eq!(Quantization::parse(name).unwrap().name(), name);
        }
    }
}
