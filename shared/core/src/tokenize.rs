//! Tokenization with the Hugging Face `tokenizers` crate.
//!
//! Texts are encoded **without** special tokens first and the model's own post-processor adds
//! them afterwards. That one path serves single sequences (truncated to the model's limit),
//! query/document pairs cut into windows, and late chunking's joined inputs, and it never depends
//! on which special tokens a model uses (`[CLS] … [SEP]`, `<s> … </s></s> … </s>`, …).
//! The padding and truncation settings stored in `tokenizer.json` are removed: the core pads to
//! each batch's own longest sequence and truncates to the model spec's limit.

use std::ops::Range;

use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use crate::error::{Error, Result};

/// One model-ready token sequence (special tokens included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<i64>,
    /// Segment ids (0 for the first sequence, 1 for a pair's second in BERT-style models).
    pub type_ids: Vec<i64>,
}

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Which end of an over-long input is cut (TEI's `truncation_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// Keep the start, cut the end (the default everywhere).
    #[default]
    Right,
    /// Keep the end, cut the start.
    Left,
}

/// One token as TEI's `/tokenize` shows it: id, text, whether it is special, and its byte span
/// in the input (none for special tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Token id.
    pub id: u32,
    /// The input's bytes it covers (the token string for special tokens).
    pub text: String,
    /// Added by the post-processor (`<s>`, `[CLS]`, …).
    pub special: bool,
    /// Byte offsets into the input.
    pub span: Option<(usize, usize)>,
}

/// A text's content tokens, before special tokens are added.
pub type Content = Encoding;

/// A `tokenizer.json` made ready for the core.
pub struct TextTokenizer {
    inner: Tokenizer,
    single_specials: usize,
    pair_specials: usize,
    pad_id: i64,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("single_specials", &self.single_specials)
            .field("pair_specials", &self.pair_specials)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Model(format!("tokenizer: {e}"))
}

impl TextTokenizer {
    /// Parses a `tokenizer.json`.
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(json).map_err(tok_err)?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["<pad>", "[PAD]"].iter().find_map(|t| inner.token_to_id(t)))
            .unwrap_or(0);
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        let (single_specials, pair_specials) = inner
            .get_post_processor()
            .map_or((0, 0), |p| (p.added_tokens(false), p.added_tokens(true)));
        Ok(Self {
            inner,
            single_specials,
            pair_specials,
            pad_id: i64::from(pad_id),
        })
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Special tokens the post-processor adds around a pair (4 for XLM-R, 3 for BERT).
    pub fn pair_specials(&self) -> usize {
        self.pair_specials
    }

    /// Special tokens the post-processor adds around one sequence.
    pub fn single_specials(&self) -> usize {
        self.single_specials
    }

    /// The content tokens of a text (no special tokens).
    pub fn content(&self, text: &str) -> Result<Content> {
        self.inner
            .encode_fast(text, false)
            .map_err(|e| Error::bad_request(format!("cannot tokenize input: {e}")))
    }

    /// One text as a model sequence. Returns the sequence and its length before truncation;
    /// it is cut to `max_len` (special tokens included).
    pub fn single(&self, text: &str, max_len: usize) -> Result<(Tokens, usize)> {
        self.single_from(text, max_len, Side::Right)
    }

    /// [`Self::single`], cutting an over-long text at `side`.
    pub fn single_from(&self, text: &str, max_len: usize, side: Side) -> Result<(Tokens, usize)> {
        let mut content = self.content(text)?;
        let full = content.len() + self.single_specials;
        let keep = max_len.saturating_sub(self.single_specials);
        let range = match side {
            Side::Right => 0..keep,
            Side::Left => content.len().saturating_sub(keep)..content.len(),
        };
        cut(&mut content, range);
        Ok((self.finish(content, None)?, full))
    }

    /// Every token of `text` with its span (TEI's `/tokenize`), special tokens added or not.
    pub fn spans(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenSpan>> {
        // `encode` (not `encode_fast`) tracks byte offsets.
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::bad_request(format!("cannot tokenize input: {e}")))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_tokens())
            .map(|(((&id, &(start, stop)), &special), token)| {
                if special == 1 {
                    TokenSpan {
                        id,
                        text: token.clone(),
                        special: true,
                        span: None,
                    }
                } else {
                    let bytes = text.as_bytes().get(start..stop.max(start)).unwrap_or(&[]);
                    TokenSpan {
                        id,
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        special: false,
                        span: Some((start, stop)),
                    }
                }
            })
            .collect())
    }

    /// Token ids back to text (TEI's `/decode`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::bad_request(format!("cannot decode ids: {e}")))
    }

    /// A query/document pair as one model sequence.
    pub fn pair(&self, query: &Content, document: Content) -> Result<Tokens> {
        self.finish(query.clone(), Some(document))
    }

    /// Late chunking: the inputs joined into one sequence, each input's token range in it.
    /// `lead` (e.g. a task instruction) comes first and belongs to no input.
    pub fn joined(
        &self,
        lead: Content,
        parts: Vec<Content>,
    ) -> Result<(Tokens, Vec<Range<usize>>)> {
        let mut ranges = Vec::with_capacity(parts.len());
        let mut at = lead.len();
        for part in &parts {
            ranges.push(at..at + part.len());
            at += part.len();
        }
        let merged = Encoding::merge(std::iter::once(lead).chain(parts), false);
        let encoding = self
            .inner
            .post_process(merged, None, true)
            .map_err(tok_err)?;
        let offset = encoding
            .get_sequence_ids()
            .iter()
            .position(Option::is_some)
            .unwrap_or(self.single_specials.min(1));
        let ranges = ranges
            .into_iter()
            .map(|r| r.start + offset..r.end + offset)
            .collect();
        Ok((to_tokens(&encoding), ranges))
    }

    fn finish(&self, first: Content, pair: Option<Content>) -> Result<Tokens> {
        let encoding = self
            .inner
            .post_process(first, pair, true)
            .map_err(tok_err)?;
        Ok(to_tokens(&encoding))
    }
}

/// Keeps only `range` of the content tokens.
pub fn cut(content: &mut Content, range: Range<usize>) {
    if range.end < content.len() {
        content.truncate(range.end, 0, TruncationDirection::Right);
    }
    let keep = range.end.min(content.len()).saturating_sub(range.start);
    if keep < content.len() {
        content.truncate(keep, 0, TruncationDirection::Left);
    }
    content.take_overflowing();
}

fn to_tokens(e: &Encoding) -> Tokens {
    Tokens {
        ids: e.get_ids().iter().map(|&i| i64::from(i)).collect(),
        type_ids: e.get_type_ids().iter().map(|&i| i64::from(i)).collect(),
    }
}
