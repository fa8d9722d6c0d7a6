"""The independent reference: what embedfn must compute, written directly with `tokenizers`,
`onnxruntime` and `numpy`, sharing no code with embedfn.

Each text runs alone (batch of one, no padding; `position_ids` = 0..n-1 where the graph takes
them; with-past exports get an empty `past_key_values.*` cache), so it also checks that embedfn's
batching and padding change nothing. The sentence vector
follows the sentence-transformers files: `1_Pooling/config.json` picks mean, CLS, max or last-token
pooling of the token-level output; when `modules.json` lists Dense modules the graph's own
`sentence_embedding` output (pooling, Dense and Normalize inside the graph) is the vector. Prompts
(`config_sentence_transformers.json`) and Jina task instructions are prepended to the text.
Rerank follows the reference `rerank()` of jina-reranker-v2: query cut to `max_query_length`,
documents cut into windows of `max_length - len(query) - specials` tokens overlapping by
`min(80, window // 4)`, the last right-aligned, each pair laid out by the tokenizer's own pair
template (`<s> q </s></s> d </s>` for XLM-R, `q <|endoftext|> d <|endoftext|>` for Qwen3),
score = max sigmoid over windows.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def _json(path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


class Model:
    def __init__(self, model_dir, onnx_file="model.onnx"):
        self.dir = Path(model_dir)
        self.config = json.loads((self.dir / "config.json").read_text())
        sbert = self.dir / "sentence_bert_config.json"
        if sbert.exists():
            self.max_length = json.loads(sbert.read_text())["max_seq_length"]
        else:  # RoBERTa positions start after the padding index
            self.max_length = self.config["max_position_embeddings"] - self.config["pad_token_id"] - 1
        self.tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.session = ort.InferenceSession(str(self.dir / "onnx" / onnx_file), providers=["CPUExecutionProvider"])
        self.tasks = self.config.get("lora_adaptations", [])
        st = _json(self.dir / "config_sentence_transformers.json", {})
        #: sentence-transformers prompts by name (`query`, `document`, ...)
        self.prompts = st.get("prompts", {}) or {}
        self.instructions = self.config.get("task_instructions") or self.prompts
        self.pooling = pooling_mode(_json(self.dir / "1_Pooling" / "config.json", {}))
        modules = _json(self.dir / "modules.json", [])
        self.dense = [m["path"] for m in modules if m.get("type", "").endswith(".Dense")]
        self.outputs = [o.name for o in self.session.get_outputs()]
        post = json.loads(self.tok.to_str()).get("post_processor") or {}
        self.pair_template = post if post.get("type") == "TemplateProcessing" else None

    # --- tokenization -------------------------------------------------------------------------
    def ids(self, text, truncate=True):
        enc = self.tok.encode(text)
        if truncate and len(enc.ids) > self.max_length:
            cut = Tokenizer.from_str(self.tok.to_str())
            cut.enable_truncation(self.max_length)
            enc = cut.encode(text)
        return enc.ids

    def text_for(self, text, task):
        return self.instructions.get(task, "") + text if task else text

    def pair_ids(self, a, b):
        """Token ids of the pair (a, b) laid out by the tokenizer's own pair template."""
        if self.pair_template is None:  # BERT-style processors: [CLS] a [SEP] b [SEP]
            cls, sep = self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]")
            return [cls] + a + [sep] + b + [sep]
        out = []
        for piece in self.pair_template["pair"]:
            if "SpecialToken" in piece:
                out += self.pair_template["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            else:
                out += a if piece["Sequence"]["id"] == "A" else b
        return out

    # --- running ------------------------------------------------------------------------------
    def run_all(self, ids, task=None):
        """Every graph output for one unpadded sequence, by name, as float32."""
        ids = np.array([ids], dtype=np.int64)
        feeds = {}
        for inp in self.session.get_inputs():
            if inp.name == "input_ids":
                feeds[inp.name] = ids
            elif inp.name == "attention_mask":
                feeds[inp.name] = np.ones_like(ids)
            elif inp.name == "token_type_ids":
                feeds[inp.name] = np.zeros_like(ids)
            elif inp.name == "position_ids":
                feeds[inp.name] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
            elif inp.name == "task_id":
                tid = np.array(self.tasks.index(task), dtype=np.int64)
                feeds[inp.name] = tid.reshape([1] * len(inp.shape))
            elif inp.name.startswith("past_key_values."):  # with-past exports: no cache yet
                dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
                feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), dtype=dtype)
        outs = self.session.run(None, feeds)
        return {name: np.asarray(v).astype(np.float32) for name, v in zip(self.outputs, outs)}

    def run(self, ids, task=None):
        """The graph's first output (token-level states, or logits) for one unpadded sequence."""
        return self.run_all(ids, task)[self.outputs[0]]

    def pool(self, tokens):
        """Pools token rows [seq, hidden] of one unpadded sequence as `1_Pooling` says."""
        if self.pooling == "lasttoken":
            return tokens[-1]
        if self.pooling == "cls":
            return tokens[0]
        if self.pooling == "max":
            return tokens.max(axis=0)
        return tokens.mean(axis=0)

    def embed(self, text, task=None, dims=None, normalize=True, prompt=None):
        """The served vector of `text`: `prompt` (a string) or the task's instruction / the
        named prompt is put in front of it first."""
        if self.tasks and task is None:
            task = "text-matching"
        text = prompt + text if prompt is not None else self.text_for(text, task)
        outs = self.run_all(self.ids(text), task)
        if self.dense:
            assert "sentence_embedding" in outs, f"{self.dir}: Dense modules need a sentence_embedding output"
            v = outs["sentence_embedding"][0]
        else:
            out = outs[self.outputs[0]]
            v = self.pool(out[0]) if out.ndim == 3 else out[0]
        return finish(v, dims, normalize)

    def token_states(self, text):
        """The token-level output (`last_hidden_state` or the first output) of `text` alone."""
        outs = self.run_all(self.ids(text))
        return outs.get("last_hidden_state", outs[self.outputs[0]])[0]

    def late_chunked(self, texts, task="text-matching"):
        lead = self.tok.encode(self.instructions.get(task, ""), add_special_tokens=False).ids
        parts = [self.tok.encode(t, add_special_tokens=False).ids for t in texts]
        bos, eos = self.tok.token_to_id("<s>"), self.tok.token_to_id("</s>")
        ids = [bos] + lead + [i for p in parts for i in p] + [eos]
        out = self.run(ids, task)[0]
        vectors, at = [], 1 + len(lead)
        for p in parts:
            vectors.append(finish(out[at:at + len(p)].mean(axis=0), None, True))
            at += len(p)
        return vectors

    # --- rerank -------------------------------------------------------------------------------
    def windows(self, n, window, overlap=80):
        if n <= window:
            return [(0, n)]
        step = window - min(overlap, window // 4)
        out, start = [], 0
        while start + window < n:
            out.append((start, start + window))
            start += step
        out.append((n - window, n))
        return out

    def rerank_window(self, query, max_query_length=512):
        """(query ids as cut, document window length) for `rerank_scores`."""
        specials = len(self.pair_ids([], []))  # <s> q </s></s> d </s>: 4; q <eot> d <eot>: 2
        budget = self.max_length - specials
        q = self.tok.encode(query, add_special_tokens=False).ids[: min(max_query_length, budget // 2)]
        return q, budget - len(q)

    def rerank_scores(self, query, documents, max_query_length=512):
        q, window = self.rerank_window(query, max_query_length)
        scores = []
        for doc in documents:
            d = self.tok.encode(doc, add_special_tokens=False).ids
            best = -np.inf
            for a, b in self.windows(len(d), window):
                logit = self.run(self.pair_ids(q, d[a:b]))[0, 0]
                best = max(best, 1.0 / (1.0 + np.exp(-logit)))
            scores.append(float(best))
        return scores


def pooling_mode(config):
    """`1_Pooling/config.json` -> "mean" | "cls" | "max" | "lasttoken" (the reference knows no other)."""
    on = [k[len("pooling_mode_"):] for k, v in config.items() if k.startswith("pooling_mode_") and v]
    if not on:
        return "mean"
    if len(on) > 1 or on[0] not in ("mean_tokens", "cls_token", "max_tokens", "lasttoken"):
        raise NotImplementedError(f"pooling {on}")
    if not config.get("include_prompt", True):
        raise NotImplementedError("include_prompt false")
    return {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "lasttoken": "lasttoken"}[on[0]]


def finish(v, dims, normalize):
    v = np.asarray(v, dtype=np.float64)
    if dims:
        v = v[:dims]
    if normalize:
        v = v / np.linalg.norm(v)
    return v


def onnx_parameters(path):
    """Weight elements of an ONNX graph's initializers, counted by the `onnx` package (external
    data left unread: the dims are in the graph file)."""
    import math

    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(math.prod(t.dims) for t in graph.initializer)
