//! Text → embeddings: task choice, instruction prefix, tokenization, batched forward passes,
//! pooling, Matryoshka truncation, then L2 normalisation. Late chunking runs the inputs as one
//! sequence and pools each input over its own span.

use std::sync::Arc;

use crate::backend::{Backend, Tensor};
use crate::batch::{plan_within, Batch, BatchLimits, RequestTokens, MAX_REQUEST_TOKENS};
use crate::error::{Error, Result};
use crate::memory::{Budget, Fit, PassModel};
use crate::pooling;
use crate::spec::ModelSpec;
use crate::tokenize::{Length, Side, TextTokenizer, Tokens};

/// One input to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Text (the task instruction is prepended when enabled).
    Text(String),
    /// The model's own token ids, used as given (OpenAI's `[int]` input form).
    Tokens(Vec<i64>),
}

/// Per-request choices.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedParams {
    /// Task adapter name; `None` uses the embedder's default task.
    pub task: Option<String>,
    /// Matryoshka truncation; `None` keeps the full width.
    pub dimensions: Option<usize>,
    /// Cut over-long inputs (`true`) or reject them with a 400 (`false`).
    pub truncate: bool,
    /// L2-normalise the (truncated) vectors.
    pub normalize: bool,
    /// Run all inputs as one sequence and pool each over its span.
    pub late_chunking: bool,
    /// Per-request token limit (special tokens included), at most the model's; `None`: the
    /// model's.
    pub max_length: Option<usize>,
    /// Which end of an over-long input is cut (TEI's `truncation_direction`).
    pub side: Side,
}

impl Default for EmbedParams {
    fn default() -> Self {
        Self {
            task: None,
            dimensions: None,
            truncate: true,
            normalize: true,
            late_chunking: false,
            max_length: None,
            side: Side::Right,
        }
    }
}

/// Embedder-wide options, fixed at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderOptions {
    /// Prepend the task's instruction to each text (the reference `encode()` does).
    pub instructions: bool,
    /// Task used when a request names none (must be one of the model's tasks).
    pub default_task: Option<String>,
    /// Limits on each forward pass.
    pub batch: BatchLimits,
    /// Most tokens one request may run, all inputs together.
    pub max_request_tokens: usize,
    /// The process's memory budget: passes are planned to fit it, and inputs that cannot fit
    /// even alone are cut (`truncate`) or refused with a 413. `None`: no budget.
    pub memory: Option<Arc<Budget>>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            instructions: true,
            default_task: None,
            batch: BatchLimits::default(),
            max_request_tokens: MAX_REQUEST_TOKENS,
            memory: None,
        }
    }
}

/// The vectors of one request, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens run through the model (special tokens and instructions included).
    pub prompt_tokens: usize,
}

/// An embedding model ready to serve: spec, tokenizer and backend.
#[derive(Debug)]
pub struct Embedder<B> {
    spec: ModelSpec,
    tokenizer: TextTokenizer,
    backend: B,
    options: EmbedderOptions,
}

impl<B: Backend> Embedder<B> {
    /// Builds an embedder; checks that the default task exists.
    pub fn new(
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        backend: B,
        mut options: EmbedderOptions,
    ) -> Result<Self> {
        spec.check_graph()?;
        if spec.tasks.is_empty() {
            // Prompt models: `DEFAULT_TASK` when it names one of the model's prompts (the
            // setting is process-wide: other models may have other names), else the model's
            // own `default_prompt_name`.
            options.default_task = options
                .default_task
                .take()
                .filter(|name| spec.task_instructions.contains_key(name))
                .or_else(|| spec.default_prompt.clone())
                .map(|name| {
                    if spec.task_instructions.contains_key(&name) {
                        Ok(name)
                    } else {
                        Err(Error::Model(format!(
                            "the default prompt '{name}' is not one of the model's prompts \
                             (config_sentence_transformers.json)"
                        )))
                    }
                })
                .transpose()?;
        } else {
            let task = options
                .default_task
                .get_or_insert_with(|| default_task(&spec.tasks));
            spec.task_id(task)
                .map_err(|e| Error::Model(e.to_string()))?;
        }
        options.batch = options.batch.for_graph(&spec.graph);
        let tokenizer = tokenizer.with_model_padding(spec.pad_token_id, spec.pad_left);
        Ok(Self {
            spec,
            tokenizer,
            backend,
            options,
        })
    }

    /// This model's passes against the memory budget, when there is one.
    fn fit(&self) -> Option<Fit> {
        let budget = self.options.memory.as_ref()?;
        Some(budget.fit(PassModel::for_spec(&self.spec)))
    }

    /// The longest sequence one pass may run: the context length, or less under the budget.
    fn limit(&self, fit: Option<&Fit>) -> usize {
        let max = self.spec.max_length;
        fit.map_or(max, |f| f.longest(max))
    }

    /// The model spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The embedder-wide options.
    pub fn options(&self) -> &EmbedderOptions {
        &self.options
    }

    /// The task used when a request names none.
    pub fn default_task(&self) -> Option<&str> {
        self.options.default_task.as_deref()
    }

    /// Embeds `inputs`.
    pub fn embed(&self, inputs: &[Input], params: &EmbedParams) -> Result<Embeddings> {
        let dims = self.check_dimensions(params.dimensions)?;
        let (task_id, instruction) = self.task(params.task.as_deref())?;
        let (vectors, prompt_tokens) = if params.late_chunking {
            self.late_chunked(inputs, instruction, task_id)?
        } else {
            let fit = self.fit();
            let (seqs, tokens) = self.sequences(inputs, instruction, params, fit.as_ref())?;
            (self.pooled(&seqs, task_id, fit.as_ref())?, tokens)
        };
        let vectors = vectors
            .into_iter()
            .map(|v| {
                let v = pooling::truncate(v, dims);
                if params.normalize {
                    pooling::l2_normalize(v)
                } else {
                    v
                }
            })
            .collect();
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    /// The token sequences the model would run for `inputs` (instruction prefix, special tokens
    /// and truncation applied), without running it.
    pub fn tokenize(&self, inputs: &[Input], params: &EmbedParams) -> Result<Vec<Tokens>> {
        let (_, instruction) = self.task(params.task.as_deref())?;
        Ok(self
            .sequences(inputs, instruction, params, self.fit().as_ref())?
            .0)
    }

    /// Every input's sequence, tokens counted as they are made: a request stops at
    /// `max_request_tokens` before the rest of it is tokenized. Returns them and the total.
    fn sequences(
        &self,
        inputs: &[Input],
        instruction: &str,
        params: &EmbedParams,
        fit: Option<&Fit>,
    ) -> Result<(Vec<Tokens>, usize)> {
        let mut count = RequestTokens::new(self.options.max_request_tokens);
        let mut seqs = Vec::with_capacity(inputs.len());
        for input in inputs {
            crate::deadline::check()?;
            let seq = self.sequence(input, instruction, params, fit)?;
            count.add(seq.len())?;
            seqs.push(seq);
        }
        Ok((seqs, count.total()))
    }

    /// The tokenizer (TEI's `/tokenize` and `/decode` use it directly).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The task or prompt an `input_type` (`query`, `document` and their aliases) stands for on
    /// this model: jina-embeddings-v3's `retrieval.query` / `retrieval.passage`, a
    /// sentence-transformers model's `query` / `document` (or `passage`) prompt; `None` when the
    /// model has no such task (its texts then go in as they are).
    pub fn task_for_input_type(&self, input_type: &str) -> Result<Option<String>> {
        let names: &[&str] = match input_type.to_ascii_lowercase().as_str() {
            "query" | "search_query" => &["retrieval.query", "query", "retrieval"],
            "document" | "search_document" | "passage" => {
                &["retrieval.passage", "document", "passage", "retrieval"]
            }
            _ => {
                return Err(Error::bad_request(format!(
                    "input_type '{input_type}' is not one of query, document (search_query, \
                     search_document, passage)"
                )))
            }
        };
        Ok(names
            .iter()
            .find(|n| {
                self.spec.tasks.iter().any(|t| t == *n)
                    || (self.spec.tasks.is_empty() && self.spec.task_instructions.contains_key(**n))
            })
            .map(|n| n.to_string()))
    }

    /// The instruction prefix a request's task or prompt name adds ("" for none).
    pub fn instruction(&self, task: Option<&str>) -> Result<&str> {
        Ok(self.task(task)?.1)
    }

    /// Token-level output of each input (TEI's `/embed_all`): one `hidden`-wide row per token
    /// of the sequence the model ran, special tokens included, padding left out.
    /// The answer may hold at most `max_values` numbers (tokens × width), checked before any
    /// pass runs.
    pub fn token_embeddings(
        &self,
        inputs: &[Input],
        params: &EmbedParams,
        max_values: usize,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let (task_id, instruction) = self.task(params.task.as_deref())?;
        let fit = self.fit();
        let (seqs, tokens) = self.sequences(inputs, instruction, params, fit.as_ref())?;
        // The answer is every token's row: its size follows the tokens, bounded before any pass.
        let values = tokens.saturating_mul(self.spec.dims);
        if values > max_values {
            return Err(Error::PayloadTooLarge(format!(
                "the answer would hold {tokens} tokens x {} values = {values} numbers, more than \
                 the limit of {max_values} (MAX_EMBED_ALL_VALUES); send fewer or shorter inputs",
                self.spec.dims
            )));
        }
        let mut out = vec![Vec::new(); seqs.len()];
        self.each_output(&seqs, task_id, fit.as_ref(), |i, output, hidden| {
            let Output::Tokens(rows, _) = output else {
                return Err(Error::bad_request(
                    "this model returns pooled vectors only, not token embeddings",
                ));
            };
            out[i] = rows.chunks(hidden).map(<[f32]>::to_vec).collect();
            Ok(())
        })?;
        Ok(out)
    }

    fn check_dimensions(&self, dimensions: Option<usize>) -> Result<usize> {
        match dimensions {
            None => Ok(self.spec.dims),
            Some(d) if (1..=self.spec.dims).contains(&d) => Ok(d),
            Some(d) => Err(Error::bad_request(format!(
                "dimensions must be between 1 and {} (got {d})",
                self.spec.dims
            ))),
        }
    }

    fn task(&self, task: Option<&str>) -> Result<(Option<i64>, &str)> {
        let Some(task) = task.or(self.options.default_task.as_deref()) else {
            return Ok((None, ""));
        };
        // A model without task adapters may still have named prompts
        // (`config_sentence_transformers.json`): TEI's `prompt_name` picks one.
        if self.spec.tasks.is_empty() && self.spec.task_instructions.contains_key(task) {
            return Ok((None, self.spec.instruction(task)));
        }
        let id = self.spec.task_id(task)?;
        let instruction = if self.options.instructions {
            self.spec.instruction(task)
        } else {
            ""
        };
        Ok((Some(id), instruction))
    }

    fn sequence(
        &self,
        input: &Input,
        instruction: &str,
        params: &EmbedParams,
        fit: Option<&Fit>,
    ) -> Result<Tokens> {
        let max = self.max_length(params.max_length)?;
        let truncate = params.truncate;
        let limit = self.limit(fit).min(max);
        let check = |len: Length| {
            if len.tokens > max && !truncate {
                return Err(too_long(len, max));
            }
            // Cutting to nothing but the special tokens would answer with a meaningless vector.
            let floor = self.tokenizer.single_specials() + 1;
            if len.tokens > limit && (!truncate || limit < floor) {
                return Err(too_large_for_memory(len, limit));
            }
            Ok(())
        };
        match input {
            Input::Text(text) => {
                // Only enough of the text is tokenized to tell whether it is longer than `limit`.
                let (tokens, full) = self.tokenizer.single_from(
                    &format!("{instruction}{text}"),
                    limit,
                    params.side,
                )?;
                check(full)?;
                Ok(tokens)
            }
            Input::Tokens(ids) => {
                if let Some(bad) = ids
                    .iter()
                    .find(|&&id| id < 0 || id as u64 >= self.spec.vocab_size as u64)
                {
                    return Err(Error::bad_request(format!(
                        "token id {bad} is outside the vocabulary (0..{})",
                        self.spec.vocab_size
                    )));
                }
                check(Length {
                    tokens: ids.len(),
                    exact: true,
                })?;
                let keep = ids.len().min(limit);
                let ids = match params.side {
                    Side::Right => ids[..keep].to_vec(),
                    Side::Left => ids[ids.len() - keep..].to_vec(),
                };
                let type_ids = vec![0; ids.len()];
                Ok(Tokens { ids, type_ids })
            }
        }
    }

    /// The token limit of a request: its `max_length` when given (at least room for the special
    /// tokens and one more), never more than the model's.
    fn max_length(&self, requested: Option<usize>) -> Result<usize> {
        let model = self.spec.max_length;
        match requested {
            None => Ok(model),
            Some(m) if m > self.tokenizer.single_specials() => Ok(m.min(model)),
            Some(m) => Err(Error::bad_request(format!(
                "max_length must be more than {} (got {m})",
                self.tokenizer.single_specials()
            ))),
        }
    }

    /// Runs `seqs` in planned batches and pools each; vectors come back in input order.
    fn pooled(
        &self,
        seqs: &[Tokens],
        task_id: Option<i64>,
        fit: Option<&Fit>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); seqs.len()];
        self.each_output(seqs, task_id, fit, |i, output, hidden| {
            out[i] = match output {
                Output::Tokens(rows, mask) => self.spec.pooling.pool(rows, mask, hidden),
                Output::Pooled(row) => row.to_vec(),
            };
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `seqs` in passes planned under the batch limits and the memory budget, and hands
    /// each sequence's output to `each`: its index, its own rows of the output (padding left
    /// out) and the output's width.
    fn each_output(
        &self,
        seqs: &[Tokens],
        task_id: Option<i64>,
        fit: Option<&Fit>,
        mut each: impl FnMut(usize, Output<'_>, usize) -> Result<()>,
    ) -> Result<()> {
        let lengths: Vec<usize> = seqs.iter().map(Tokens::len).collect();
        let fits = |batch, seq| fit.is_none_or(|f| f.fits(batch, seq));
        for group in plan_within(&lengths, self.options.batch, fits) {
            crate::deadline::check()?;
            let rows: Vec<&Tokens> = group.iter().map(|&i| &seqs[i]).collect();
            let batch = Batch::pad(&rows, self.tokenizer.padding(), task_id);
            let tensor = self.backend.forward(&batch)?;
            let hidden = self.check_output(&tensor, &batch)?;
            for (row, &i) in group.iter().enumerate() {
                let output = if tensor.shape.len() == 3 {
                    let cols = batch.span(lengths[i]);
                    let start = row * batch.seq * hidden;
                    Output::Tokens(
                        &tensor.data[start + cols.start * hidden..start + cols.end * hidden],
                        &batch.mask(row)[cols],
                    )
                } else {
                    Output::Pooled(&tensor.data[row * hidden..(row + 1) * hidden])
                };
                each(i, output, hidden)?;
            }
        }
        Ok(())
    }

    fn late_chunked(
        &self,
        inputs: &[Input],
        instruction: &str,
        task_id: Option<i64>,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        let parts = inputs
            .iter()
            .map(|input| match input {
                Input::Text(text) => self.tokenizer.content(text),
                Input::Tokens(_) => Err(Error::bad_request(
                    "late_chunking takes text inputs, not token ids",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let lead = self.tokenizer.content(instruction)?;
        let (seq, spans) = self.tokenizer.joined(lead, parts)?;
        let max = self.spec.max_length;
        if seq.len() > max {
            // Cutting the joint sequence would leave later inputs without tokens, so this is
            // rejected whatever `truncate` says.
            return Err(Error::bad_request(format!(
                "late_chunking: the inputs together take {} tokens, more than the context length {max}",
                seq.len()
            )));
        }
        let limit = self.limit(self.fit().as_ref());
        if seq.len() > limit {
            return Err(too_large_for_memory(seq.len(), limit));
        }
        crate::deadline::check()?;
        let batch = Batch::pad(&[&seq], self.tokenizer.padding(), task_id);
        let tensor = self.backend.forward(&batch)?;
        let hidden = self.check_output(&tensor, &batch)?;
        if tensor.shape.len() != 3 {
            return Err(Error::bad_request(
                "late_chunking needs a model with token-level output",
            ));
        }
        let vectors = spans
            .into_iter()
            .map(|r| {
                if r.is_empty() {
                    vec![0.0; hidden]
                } else {
                    pooling::mean_span(&tensor.data, hidden, r.start, r.end)
                }
            })
            .collect();
        Ok((vectors, seq.len()))
    }

    /// Checks the output shape against the batch; returns the hidden width.
    fn check_output(&self, t: &Tensor, batch: &Batch) -> Result<usize> {
        let ok = match t.shape.as_slice() {
            [b, s, h] => *b == batch.batch && *s == batch.seq && *h > 0,
            [b, h] => *b == batch.batch && *h > 0,
            _ => false,
        };
        let hidden = *t.shape.last().unwrap_or(&0);
        if !ok || t.data.len() != t.shape.iter().product::<usize>() {
            return Err(Error::Backend(format!(
                "unexpected output shape {:?} for a batch of {}×{}",
                t.shape, batch.batch, batch.seq
            )));
        }
        if hidden < self.spec.dims {
            return Err(Error::Backend(format!(
                "model output width {hidden} is smaller than hidden_size {}",
                self.spec.dims
            )));
        }
        Ok(hidden)
    }
}

/// One sequence's share of a pass's output.
enum Output<'a> {
    /// Token-level rows `[len, hidden]` and their attention mask (padding left out).
    Tokens(&'a [f32], &'a [i64]),
    /// A pooled `[hidden]` vector.
    Pooled(&'a [f32]),
}

/// `text-matching` when the model has it (jina-embeddings-v3's reference default), else the first task.
fn default_task(tasks: &[String]) -> String {
    tasks
        .iter()
        .find(|t| *t == "text-matching")
        .unwrap_or(&tasks[0])
        .clone()
}

/// The 413 for a sequence the memory budget cannot run, naming how many tokens fit.
pub fn too_large_for_memory(len: impl std::fmt::Display, fits: usize) -> Error {
    Error::TooLargeForMemory {
        message: format!(
            "the input takes {len} tokens but at most {fits} tokens fit in one pass under the \
             memory budget (MAX_MEMORY); send a shorter input or allow truncation"
        ),
        fits,
    }
}

fn too_long(len: Length, max: usize) -> Error {
    Error::bad_request(format!(
        "the input length exceeds the context length ({len} tokens > {max})"
    ))
}
