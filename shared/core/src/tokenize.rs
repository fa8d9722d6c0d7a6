//! Tokenization with the Hugging Face `tokenizers` crate.
//!
//! Texts are encoded **without** special tokens first and the model's own post-processor adds
//! them afterwards. That one path serves single sequences (truncated to the model's limit),
//! query/document pairs cut into windows, and late chunking's joined inputs, and it never depends
//! on which special tokens a model uses (`[CLS] … [SEP]`, `<s> … </s></s> … </s>`, …).
//! The padding and truncation settings stored in `tokenizer.json` are removed: the core pads to
//! each batch's own longest sequence and truncates to the model spec's limit.
//!
//! Tokenizing costs time and memory in proportion to the text, so a text is never tokenized
//! further than what can be served: [`TextTokenizer::content_within`] tokenizes a piece of the
//! text from the kept end, large enough for the tokens wanted ([`BYTES_PER_TOKEN`] bytes a
//! token, doubled while the piece falls short), and says whether the whole text was read. A
//! 4 MiB text truncated to 512 tokens costs the tokenization of a few KiB.

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

/// The first guess of how many bytes of text make one token (real text averages 3–6 bytes a
/// token; a piece that falls short is doubled, so the guess only decides how often).
pub const BYTES_PER_TOKEN: usize = 4;

/// Tokens tokenized past the ones wanted, so that the kept tokens never border the cut (a
/// pre-tokenizer word split by the cut changes only the tokens at the cut).
const MARGIN: usize = 16;

/// A text's content tokens from one end, as many as were asked for (or all of them).
#[derive(Debug, Clone)]
pub struct Partial {
    /// The tokens, from the kept end: at least the wanted number, unless the text has fewer.
    pub content: Content,
    /// Whether the whole text was tokenized (`content.len()` is then its exact length).
    pub complete: bool,
}

/// How a model's batches are padded: with which id, and on which side (`tokenizer_config.json`
/// `padding_side`: decoders such as Qwen3-Embedding pad on the left, so every row's last real
/// token sits in the last column, where graphs that pool inside read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    /// The token id padding uses.
    pub id: i64,
    /// Pad before the tokens instead of after them.
    pub left: bool,
}

impl Padding {
    /// Where a row of `len` real tokens sits in a row of `seq` columns.
    pub fn span(self, len: usize, seq: usize) -> std::ops::Range<usize> {
        if self.left {
            seq - len..seq
        } else {
            0..len
        }
    }

    /// Appends one row: the `real` values (one per real token) padded to `seq` with `fill`.
    pub(crate) fn row<T: Copy>(
        self,
        out: &mut Vec<T>,
        real: impl ExactSizeIterator<Item = T>,
        seq: usize,
        fill: T,
    ) {
        let pad = std::iter::repeat_n(fill, seq - real.len());
        if self.left {
            out.extend(pad);
            out.extend(real);
        } else {
            out.extend(real);
            out.extend(pad);
        }
    }
}

/// A `tokenizer.json` made ready for the core.
pub struct TextTokenizer {
    inner: Tokenizer,
    single_specials: usize,
    pair_specials: usize,
    pad_id: PadId,
    /// `tokenizer.json` pads on the left (`None`: it declares no padding).
    pad_left: Option<bool>,
}

/// Where the padding id came from (which source wins when the model's config names one too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadId {
    /// `tokenizer.json`'s padding settings, or the model's `config.json`.
    Declared(i64),
    /// A token named like padding, or 0.
    Named(i64),
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
        // The padding the tokenizer declares, else a `<pad>` / `[PAD]` token (a model's
        // `config.json` `pad_token_id` comes before the latter: [`Self::with_model_padding`]).
        let pad_left = inner
            .get_padding()
            .map(|p| matches!(p.direction, tokenizers::PaddingDirection::Left));
        let pad_id = inner
            .get_padding()
            .map(|p| PadId::Declared(i64::from(p.pad_id)))
            .or_else(|| {
                ["<pad>", "[PAD]"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
                    .map(|id| PadId::Named(i64::from(id)))
            })
            .unwrap_or(PadId::Named(0));
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        let (single_specials, pair_specials) = inner
            .get_post_processor()
            .map_or((0, 0), |p| (p.added_tokens(false), p.added_tokens(true)));
        Ok(Self {
            inner,
            single_specials,
            pair_specials,
            pad_id,
            pad_left,
        })
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> i64 {
        match self.pad_id {
            PadId::Declared(id) | PadId::Named(id) => id,
        }
    }

    /// How batches are padded: [`Self::pad_id`], on the side `tokenizer.json` declares, else
    /// the one the model's files name ([`Self::with_model_padding`]).
    pub fn padding(&self) -> Padding {
        Padding {
            id: self.pad_id(),
            left: self.pad_left.unwrap_or(false),
        }
    }

    /// Pads with the model's `config.json` `pad_token_id` unless `tokenizer.json` declares its
    /// own padding (decoders such as Qwen3 pad with `<|endoftext|>`, and their classification
    /// heads find the last real token by it), on the side of `tokenizer_config.json`
    /// `padding_side` unless `tokenizer.json` declares one.
    pub fn with_model_padding(mut self, pad_token_id: Option<i64>, pad_left: bool) -> Self {
        if let (PadId::Named(_), Some(id)) = (self.pad_id, pad_token_id) {
            self.pad_id = PadId::Declared(id);
        }
        self.pad_left.get_or_insert(pad_left);
        self
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

    /// At least `want` content tokens of `text` from `side` (all of them when it has fewer),
    /// tokenizing only a piece of it: `want × BYTES_PER_TOKEN` bytes from that end, doubled
    /// while the piece yields too few tokens. Tokens are the same as those of the whole text:
    /// [`MARGIN`] more than wanted are made and the ones at the cut are dropped.
    pub fn content_within(&self, text: &str, want: usize, side: Side) -> Result<Partial> {
        let mut bytes = want
            .saturating_add(MARGIN)
            .saturating_mul(BYTES_PER_TOKEN)
            .max(256);
        loop {
            let piece = piece(text, bytes, side);
            if piece.len() == text.len() {
                return Ok(Partial {
                    content: self.content(text)?,
                    complete: true,
                });
            }
            let mut content = self.content(piece)?;
            let len = content.len();
            if len > want.saturating_add(MARGIN) {
                // Drop the tokens that border the cut (they may be a word's split pieces).
                let range = match side {
                    Side::Right => 0..len - MARGIN,
                    Side::Left => MARGIN..len,
                };
                cut(&mut content, range);
                return Ok(Partial {
                    content,
                    complete: false,
                });
            }
            bytes = bytes.saturating_mul(2);
        }
    }

    /// One text as a model sequence. Returns the sequence and its length before truncation
    /// (exact when the whole text was tokenized, else a lower bound above `max_len`); it is
    /// cut to `max_len` (special tokens included).
    pub fn single(&self, text: &str, max_len: usize) -> Result<(Tokens, Length)> {
        self.single_from(text, max_len, Side::Right)
    }

    /// [`Self::single`], cutting an over-long text at `side`. Only as much of the text is
    /// tokenized as tells that it is longer than `max_len`.
    pub fn single_from(&self, text: &str, max_len: usize, side: Side) -> Result<(Tokens, Length)> {
        let keep = max_len.saturating_sub(self.single_specials);
        let Partial {
            mut content,
            complete,
        } = self.content_within(text, keep + 1, side)?;
        let full = Length {
            tokens: content.len() + self.single_specials,
            exact: complete,
        };
        let range = match side {
            Side::Right => 0..keep,
            Side::Left => content.len().saturating_sub(keep)..content.len(),
        };
        cut(&mut content, range);
        Ok((self.finish(content, None)?, full))
    }

    /// Every token of `text` with its span (TEI's `/tokenize`), special tokens added or not;
    /// `None` when the text has more than `max` content tokens (found without tokenizing more
    /// of it than that takes).
    pub fn spans(
        &self,
        text: &str,
        add_special_tokens: bool,
        max: usize,
    ) -> Result<Option<Vec<TokenSpan>>> {
        // A long text is first measured from a piece (so it is never tokenized whole when it is
        // over `max`); a short one costs no more tokenized whole, and once only.
        let short = text.len() <= max.saturating_add(1).saturating_mul(BYTES_PER_TOKEN);
        if !short && !self.content_within(text, max + 1, Side::Right)?.complete {
            return Ok(None);
        }
        // `encode` (not `encode_fast`) tracks byte offsets.
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::bad_request(format!("cannot tokenize input: {e}")))?;
        if encoding.len() > max + usize::from(add_special_tokens) * self.single_specials {
            return Ok(None);
        }
        Ok(Some(
            encoding
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
                .collect(),
        ))
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

    /// The pair of `query` and the tokens `range` of `document`, copying only that window.
    pub fn pair_window(
        &self,
        query: &Content,
        document: &Content,
        range: Range<usize>,
    ) -> Result<Tokens> {
        self.pair(query, window(document, range))
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

/// A text's length in tokens: exact, or a lower bound when only part of it was tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// Tokens counted.
    pub tokens: usize,
    /// Whether that is the whole text.
    pub exact: bool,
}

impl std::fmt::Display for Length {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.exact {
            write!(f, "{}", self.tokens)
        } else {
            write!(f, "at least {}", self.tokens)
        }
    }
}

/// At most `bytes` bytes of `text` from `side`, cut at a character boundary.
fn piece(text: &str, bytes: usize, side: Side) -> &str {
    if bytes >= text.len() {
        return text;
    }
    match side {
        Side::Right => {
            let mut end = bytes;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            &text[..end]
        }
        Side::Left => {
            let mut start = text.len() - bytes;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            &text[start..]
        }
    }
}

/// A copy of the tokens `range` of `content` (only those: no copy of the whole encoding).
fn window(content: &Content, range: Range<usize>) -> Content {
    let r = range.start.min(content.len())..range.end.min(content.len());
    Encoding::new(
        content.get_ids()[r.clone()].to_vec(),
        content.get_type_ids()[r.clone()].to_vec(),
        content.get_tokens()[r.clone()].to_vec(),
        content.get_word_ids()[r.clone()].to_vec(),
        content.get_offsets()[r.clone()].to_vec(),
        content.get_special_tokens_mask()[r.clone()].to_vec(),
        content.get_attention_mask()[r].to_vec(),
        Vec::new(),
        Default::default(),
    )
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
