"""A model directory as the Python contenders read it, following tests/reference.py: the
tokenizer (no padding, truncation at the model's limit), the default task's `task_id` and
instruction, the pad id, the pooling (`1_Pooling/config.json`: mean or last token), and
cross-encoder pairs as the tokenizer's own pair template lays them out
(`<s> query </s></s> document </s>` for XLM-R, `query <|endoftext|> document <|endoftext|>` for
Qwen3)."""

import functools
import json
from pathlib import Path

from tokenizers import Tokenizer

DEFAULT_TASK = "text-matching"
MAX_QUERY_TOKENS = 512


class TextModel:
    """Tokenization and model facts of one model directory (no session: see `onnx_path`)."""

    def __init__(self, model_dir, onnx_file="model.onnx"):
        self.dir = Path(model_dir)
        self.onnx_file = onnx_file
        self.name = self.dir.name
        config = json.loads((self.dir / "config.json").read_text())
        self.cross_encoder = any(a.endswith("ForSequenceClassification") for a in config["architectures"])
        self.max_length = _max_length(self.dir, config)
        self.pad_id = config.get("pad_token_id", 0)
        tasks = config.get("lora_adaptations", [])
        self.task_id = tasks.index(DEFAULT_TASK) if tasks else None
        self.instruction = config.get("task_instructions", {}).get(DEFAULT_TASK, "") if tasks else ""
        self.tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_length)
        self.pooling = "sequence" if self.cross_encoder else _pooling(self.dir)
        #: special tokens the post-processor adds to one text / to a pair
        self.single_specials = self.tok.num_special_tokens_to_add(False)
        self.pair_specials = self.tok.num_special_tokens_to_add(True)

    @property
    def onnx_path(self):
        """The graph every contender runs."""
        return str(self.dir / "onnx" / self.onnx_file)

    def encode(self, text):
        """Token ids of one text as the embedder runs it: instruction, specials, truncation."""
        return self.tok.encode(self.instruction + text).ids

    @functools.cached_property
    def _untruncated(self):
        """A copy of the tokenizer without truncation."""
        free = Tokenizer.from_str(self.tok.to_str())
        free.no_truncation()
        return free

    def untruncated_length(self, text):
        """Tokens the embedder would see without truncation (instruction, specials included)."""
        return len(self._untruncated.encode(self.instruction + text).ids)

    def pair(self, query, document):
        """Cross-encoder ids of (query, document); the document must fit one window (documents
        longer than that are scored over several windows, which the benchmark does not do)."""
        budget = self.max_length - self.pair_specials
        q = self.tok.encode(query, add_special_tokens=False)
        q.truncate(min(MAX_QUERY_TOKENS, budget // 2))
        d = self.tok.encode(document, add_special_tokens=False)
        if len(d.ids) > budget - len(q.ids):
            raise ValueError(f"document of {len(d.ids)} tokens does not fit one window of {budget - len(q.ids)}")
        return self.tok.post_process(q, d).ids


def _max_length(model_dir, config):
    """`max_seq_length` of sentence_bert_config.json, else the positions (RoBERTa's offset off)."""
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        return json.loads(sbert.read_text())["max_seq_length"]
    return config["max_position_embeddings"] - config["pad_token_id"] - 1


def _pooling(model_dir):
    """`mean` or `lasttoken`, from `1_Pooling/config.json` (mean when absent)."""
    path = model_dir / "1_Pooling" / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    if config.get("pooling_mode_lasttoken"):
        return "lasttoken"
    if not config.get("pooling_mode_mean_tokens", True):
        raise ValueError(f"{model_dir} pools neither by mean nor by last token; the Python contenders do those")
    return "mean"
