"""Golden checks: embedfn's token ids, vectors and rerank scores against the independent
reference (`reference.py`) on the same models."""

import base64

import numpy as np
import pytest

from parity import close
from reference import Model

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界！这是一个测试。",
    "Ünïcödé, émojis 🎉 and    spaces",
    "",
    "a",
    "word " * 700,  # longer than every test model's limit: truncated
]


# --- MiniLM (real model, int8 ONNX) -------------------------------------------------------------

def test_minilm_token_ids_match_reference(minilm, minilm_ref):
    got = minilm.post("/tokenize", {"input": TEXTS}).json()["tokens"]
    assert got == [minilm_ref.ids(t) for t in TEXTS]
    assert len(got[-1]) == 256  # sentence_bert_config.json max_seq_length


def test_minilm_ollama_embed_matches_reference(minilm, minilm_ref):
    r = minilm.post("/api/embed", {"model": "minilm", "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt_eval_count"] == sum(len(minilm_ref.ids(t)) for t in TEXTS)
    for got, text in zip(body["embeddings"], TEXTS):
        close(got, minilm_ref.embed(text))


def test_minilm_openai_float_and_base64_match_reference(minilm, minilm_ref):
    for fmt in ("float", "base64"):
        r = minilm.post("/v1/embeddings", {"model": "minilm", "input": TEXTS[:4], "encoding_format": fmt})
        assert r.status_code == 200, r.text
        for item, text in zip(r.json()["data"], TEXTS[:4]):
            v = item["embedding"]
            if fmt == "base64":
                v = np.frombuffer(base64.b64decode(v), dtype="<f4")
            close(v, minilm_ref.embed(text))


def test_minilm_dimensions_truncate_then_normalise(minilm, minilm_ref):
    r = minilm.post("/api/embed", {"input": "Matryoshka", "dimensions": 64}).json()
    v = np.array(r["embeddings"][0])
    assert v.shape == (64,)
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    close(v, minilm_ref.embed("Matryoshka", dims=64))


def test_minilm_legacy_embeddings_route(minilm, minilm_ref):
    r = minilm.post("/api/embeddings", {"model": "minilm", "prompt": "Hello world"}).json()
    close(r["embedding"], minilm_ref.embed("Hello world"))
    assert minilm.post("/api/embeddings", {"prompt": ""}).json() == {"embedding": []}


def test_minilm_token_id_input(minilm, minilm_ref):
    ids = minilm_ref.ids("Hello world")
    r = minilm.post("/v1/embeddings", {"input": [ids, ids[:3]]}).json()
    close(r["data"][0]["embedding"], minilm_ref.embed("Hello world"))
    assert r["usage"]["prompt_tokens"] == len(ids) + 3


def test_many_inputs_batched_in_input_order(minilm, minilm_ref):
    texts = [f"sentence number {i} " + "x " * (i % 37) for i in range(100)]
    r = minilm.post("/api/embed", {"input": texts}).json()
    for i in (0, 1, 36, 50, 99):
        close(r["embeddings"][i], minilm_ref.embed(texts[i]))


# --- Jina-shaped fixtures ----------------------------------------------------------------------

TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]


def test_jina_token_ids_with_instruction_prefix(jina, embed_ref):
    for task in TASKS:
        got = jina.post("/tokenize", {"input": TEXTS, "task": task}).json()["tokens"]
        assert got == [embed_ref.ids(embed_ref.text_for(t, task)) for t in TEXTS]
    assert len(got[-1]) == 512  # max_position_embeddings 514 minus the RoBERTa offset


@pytest.mark.parametrize("task", TASKS)
def test_jina_task_by_option_suffix_and_field(jina, embed_ref, task):
    expected = embed_ref.embed("Where is the cat?", task=task)
    suffix = {"retrieval.query": "-query", "retrieval.passage": "-passage"}.get(task, "-" + task)
    by_option = jina.post("/api/embed", {"model": "jina-embed-tiny", "input": "Where is the cat?",
                                         "options": {"task": task}}).json()["embeddings"][0]
    by_suffix = jina.post("/api/embed", {"model": "jina-embed-tiny" + suffix,
                                         "input": "Where is the cat?"}).json()["embeddings"][0]
    by_field = jina.post("/v1/embeddings", {"input": "Where is the cat?", "task": task}).json()["data"][0]["embedding"]
    for v in (by_option, by_suffix, by_field):
        close(v, expected)


def test_jina_tasks_give_different_vectors(jina):
    vs = [jina.post("/v1/embeddings", {"input": "same text", "task": t}).json()["data"][0]["embedding"] for t in TASKS]
    assert len({tuple(np.round(v, 4)) for v in vs}) == len(TASKS)


def test_jina_default_task_is_text_matching(jina, embed_ref):
    v = jina.post("/api/embed", {"input": "default"}).json()["embeddings"][0]
    close(v, embed_ref.embed("default", task="text-matching"))


def test_jina_matryoshka_and_unnormalised(jina, embed_ref):
    v = jina.post("/v1/embeddings", {"input": "doc", "task": "separation", "dimensions": 16}).json()
    close(v["data"][0]["embedding"], embed_ref.embed("doc", task="separation", dims=16))
    raw = jina.post("/v1/embeddings", {"input": "doc", "task": "separation", "normalized": False}).json()
    close(raw["data"][0]["embedding"], embed_ref.embed("doc", task="separation", normalize=False))


def test_jina_late_chunking(jina, embed_ref):
    chunks = ["Berlin is the capital of Germany.", "Its population is 3.8 million.", "It is big."]
    r = jina.post("/v1/embeddings", {"input": chunks, "task": "retrieval.passage", "late_chunking": True})
    assert r.status_code == 200, r.text
    expected = embed_ref.late_chunked(chunks, task="retrieval.passage")
    for item, e in zip(r.json()["data"], expected):
        close(item["embedding"], e)
    # Late chunking differs from embedding each chunk alone: the context flows between chunks.
    alone = embed_ref.embed(chunks[1], task="retrieval.passage")
    assert np.max(np.abs(np.array(r.json()["data"][1]["embedding"]) - alone)) > 1e-3


def test_binary_encodings(jina, embed_ref):
    e = embed_ref.embed("bits", task="text-matching")
    bits = np.packbits(e > 0)
    u = jina.post("/v1/embeddings", {"input": "bits", "embedding_type": "ubinary"}).json()["data"][0]["embedding"]
    b = jina.post("/v1/embeddings", {"input": "bits", "embedding_type": "binary"}).json()["data"][0]["embedding"]
    assert u == bits.tolist()
    assert b == (bits.astype(np.int16) - 128).tolist()


def test_fp16_output_is_converted(start, models_dir):
    ref = Model(models_dir / "jina-embed-tiny", "model_fp16.onnx")
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "jina-embed-tiny"), RERANKER_MODEL_ID="none",
                   ONNX_QUANTIZATION="fp16")
    r = server.post("/api/embed", {"input": TEXTS[:4], "options": {"task": "classification"}}).json()
    for v, text in zip(r["embeddings"], TEXTS[:4]):
        close(v, ref.embed(text, task="classification"))
    server.stop()


DOCS = [
    "The cat sat on the mat.",
    "Dogs are loyal animals.",
    "你好世界",
    "A very long document about cats. " * 120,  # several windows
    "",
]


def test_rerank_scores_and_order_match_reference(jina, rerank_ref):
    expected = rerank_ref.rerank_scores("Where is the cat?", DOCS)
    order = sorted(range(len(DOCS)), key=lambda i: (-expected[i], i))
    for path in ("/v1/rerank", "/api/rerank"):
        r = jina.post(path, {"model": "jina-rerank-tiny", "query": "Where is the cat?", "documents": DOCS})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["index"] for x in results] == order
        close([x["relevance_score"] for x in results], [expected[i] for i in order])


def test_rerank_long_document_uses_windows(jina, rerank_ref):
    doc = " ".join(f"token{i % 50} filler words here" for i in range(200))
    d = rerank_ref.tok.encode(doc, add_special_tokens=False).ids
    q = rerank_ref.tok.encode("token7 here", add_special_tokens=False).ids
    assert len(rerank_ref.windows(len(d), rerank_ref.max_length - 4 - len(q))) > 2
    r = jina.post("/v1/rerank", {"query": "token7 here", "documents": [doc]}).json()
    close([r["results"][0]["relevance_score"]], rerank_ref.rerank_scores("token7 here", [doc]))
    assert r["usage"]["total_tokens"] > rerank_ref.max_length


def test_rerank_top_n_documents_and_cohere_objects(jina, rerank_ref):
    r = jina.post("/v1/rerank", {"query": "cat", "documents": [{"text": d} for d in DOCS[:3]],
                                 "top_n": 2, "return_documents": True}).json()
    assert len(r["results"]) == 2
    for x in r["results"]:
        assert x["document"] == {"text": DOCS[x["index"]]}
    r = jina.post("/v1/rerank", {"query": "cat", "documents": DOCS[:3], "return_documents": False}).json()
    assert all("document" not in x for x in r["results"])
    r = jina.post("/api/rerank", {"query": "cat", "documents": DOCS[:3]}).json()
    assert all(x["document"] == DOCS[x["index"]] for x in r["results"])
