"""The independent reference: what embedfn must compute, written directly with `tokenizers`,
`onnxruntime` and `numpy`, sharing no code with embedfn.

Each text runs alone (batch of one, no padding), so it also checks that embedfn's batching and
padding change nothing. Rerank follows the reference `rerank()` of jina-reranker-v2: query cut to
`max_query_length`, documents cut into windows of `max_length - len(query) - specials` tokens
overlapping by `min(80, window // 4)`, the last right-aligned, score = max sigmoid over windows.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


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
        self.instructions = self.config.get("task_instructions", {})

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

    # --- running ------------------------------------------------------------------------------
    def run(self, ids, task=None):
        ids = np.array([ids], dtype=np.int64)
        feeds = {}
        for inp in self.session.get_inputs():
            if inp.name == "input_ids":
                feeds[inp.name] = ids
            elif inp.name == "attention_mask":
                feeds[inp.name] = np.ones_like(ids)
            elif inp.name == "token_type_ids":
                feeds[inp.name] = np.zeros_like(ids)
            elif inp.name == "task_id":
                tid = np.array(self.tasks.index(task), dtype=np.int64)
                feeds[inp.name] = tid.reshape([1] * len(inp.shape))
        return self.session.run(None, feeds)[0].astype(np.float32)

    def embed(self, text, task=None, dims=None, normalize=True):
        if self.tasks and task is None:
            task = "text-matching"
        out = self.run(self.ids(self.text_for(text, task)), task)
        v = out[0].mean(axis=0) if out.ndim == 3 else out[0]
        return finish(v, dims, normalize)

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

    def rerank_scores(self, query, documents, max_query_length=512):
        bos, eos = self.tok.token_to_id("<s>"), self.tok.token_to_id("</s>")
        specials = 4  # <s> q </s></s> d </s>
        budget = self.max_length - specials
        q = self.tok.encode(query, add_special_tokens=False).ids[: min(max_query_length, budget // 2)]
        window = budget - len(q)
        scores = []
        for doc in documents:
            d = self.tok.encode(doc, add_special_tokens=False).ids
            best = -np.inf
            for a, b in self.windows(len(d), window):
                logit = self.run([bos] + q + [eos, eos] + d[a:b] + [eos])[0, 0]
                best = max(best, 1.0 / (1.0 + np.exp(-logit)))
            scores.append(float(best))
        return scores


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
