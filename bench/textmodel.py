"""A model directory as the Python contenders read it, following tests/reference.py: the
tokenizer (no padding, truncation at the model's limit), the default task's `task_id` and
instruction, the pad id, and cross-encoder pairs `<s> query </s></s> document </s>`."""

import functools
import json
from pathlib import Path

from tokenizers import Tokenizer

DEFAULT_TASK = "text-matching"
MAX_QUERY_TOKENS = 512
PAIR_SPECIALS = 4


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
        if not self.cross_encoder:
            _require_mean_pooling(self.dir)

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
        bos, eos = self.tok.token_to_id("<s>"), self.tok.token_to_id("</s>")
        budget = self.max_length - PAIR_SPECIALS
        q = self.tok.encode(query, add_special_tokens=False).ids[: min(MAX_QUERY_TOKENS, budget // 2)]
        d = self.tok.encode(document, add_special_tokens=False).ids
        if len(d) > budget - len(q):
            raise ValueError(f"document of {len(d)} tokens does not fit one window of {budget - len(q)}")
        return [bos, *q, eos, eos, *d, eos]


def _max_length(model_dir, config):
    """`max_seq_length` of sentence_bert_config.json, else the positions (RoBERTa's offset off)."""
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        return json.loads(sbert.read_text())["max_seq_length"]
    return config["max_position_embeddings"] - config["pad_token_id"] - 1


def _require_mean_pooling(model_dir):
    """The Python contenders mean-pool; fail on a model that pools otherwise."""
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", True):
        raise ValueError(f"{model_dir} does not mean-pool; the Python contenders only mean-pool")
