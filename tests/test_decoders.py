"""Decoder-family models end to end: the real `embedfn` binary serving the fixtures that
`tests/fixtures/decoder.py` makes, every vector and score compared with the independent reference
(`reference.py`: each text alone through Python ONNX Runtime + tokenizers, sharing no code with
embedfn).

* `qwen3-embed-tiny`  (Qwen3-Embedding / jina-embeddings-v5-text-small): a causal decoder whose
  graph takes `position_ids`, LAST-TOKEN pooling from `1_Pooling/config.json`, a tokenizer that
  appends `<|endoftext|>` and pads on the left, a `query` instruction prompt and an empty
  `document` prompt. Batches mix lengths, so padding and positions must not change a vector.
* `gemma-embed-tiny`  (EmbeddingGemma): mean pooling, then Dense 48->192->96 and Normalize, all
  inside the graph's `sentence_embedding` output, which is what must be served (96 wide).
* `qwen3-rerank-tiny` (Qwen3-Reranker exported as `Qwen3ForSequenceClassification`): `logits`
  [batch, 1] read at the last non-pad token inside the graph; pairs `q <|endoftext|> d
  <|endoftext|>`; long documents in windows.
* Model directories embedfn cannot honour are refused at start, naming the file and the field.
"""

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from parity import close
from reference import Model

QWEN, GEMMA, RERANK = "qwen3-embed-tiny", "gemma-embed-tiny", "qwen3-rerank-tiny"
EOT = "<|endoftext|>"
QWEN_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
GEMMA_QUERY, GEMMA_DOCUMENT = "task: search result | query: ", "title: none | text: "

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界！这是一个测试。",
    "Ünïcödé, émojis 🎉 and    spaces",
    "a",
    "word " * 700,  # longer than the fixtures' 512 tokens: truncated
]
QUERIES = ["What is the capital of Germany?", "where is the cat"]
QUERY = "Where is the cat?"
DOCS = [
    "The cat sat on the mat.",
    "Dogs are loyal animals.",
    "你好世界",
    "A very long document about cats. " * 60,  # several windows
    "cats",
]


@pytest.fixture(scope="module")
def dirs(models_dir):
    for name in (QWEN, GEMMA, RERANK):
        assert (models_dir / name / "onnx" / "model.onnx").is_file(), f"fixture {name} missing in {models_dir}"
    return {name: models_dir / name for name in (QWEN, GEMMA, RERANK)}


@pytest.fixture(scope="module")
def qwen_ref(dirs):
    return Model(dirs[QWEN])


@pytest.fixture(scope="module")
def gemma_ref(dirs):
    return Model(dirs[GEMMA])


@pytest.fixture(scope="module")
def rerank_ref(dirs):
    return Model(dirs[RERANK])


@pytest.fixture(scope="module")
def qwen(start, dirs):
    return start(EMBEDDINGS_MODEL_ID=str(dirs[QWEN]), RERANKER_MODEL_ID=str(dirs[RERANK]))


@pytest.fixture(scope="module")
def gemma(start, dirs):
    return start(EMBEDDINGS_MODEL_ID=str(dirs[GEMMA]), RERANKER_MODEL_ID="none")


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def openai_vectors(server, body):
    return [item["embedding"] for item in ok(server.post("/v1/embeddings", body))["data"]]


# --- qwen3-embed-tiny: last-token pooling ---------------------------------------------------------

def test_reference_fixture_is_what_the_tests_assume(qwen_ref, gemma_ref, rerank_ref):
    """Guards the assumptions below (not embedfn): the long text is cut, `<|endoftext|>` ends
    every text, last-token pooling differs from mean pooling, prompts change the vector."""
    eot = qwen_ref.tok.token_to_id(EOT)
    assert qwen_ref.max_length == 512 and qwen_ref.pooling == "lasttoken"
    assert all(qwen_ref.ids(t)[-1] == eot for t in TEXTS)
    assert len(qwen_ref.ids(TEXTS[-1])) == 512
    states = qwen_ref.token_states(TEXTS[1])
    mean = states.mean(axis=0) / np.linalg.norm(states.mean(axis=0))
    assert np.abs(qwen_ref.embed(TEXTS[1]) - mean).max() > 0.1
    assert np.abs(qwen_ref.embed(QUERIES[0], task="query") - qwen_ref.embed(QUERIES[0])).max() > 1e-3
    assert gemma_ref.dense == ["2_Dense", "3_Dense"] and gemma_ref.embed("x").shape == (96,)
    assert rerank_ref.pair_ids([7], [8]) == [7, eot, 8, eot]


def test_qwen_tokenize_appends_endoftext(qwen, qwen_ref):
    eot = qwen_ref.tok.token_to_id(EOT)
    # TEI's /tokenize does not truncate (as TEI's own); embedfn's `input` form cuts at 512.
    tei = ok(qwen.post("/tokenize", {"inputs": TEXTS}))
    assert [[t["id"] for t in toks] for toks in tei] == [qwen_ref.ids(t, truncate=False) for t in TEXTS]
    assert all(toks[-1]["id"] == eot and toks[-1]["special"] for toks in tei)
    assert not any(t["special"] for toks in tei for t in toks[:-1])
    want = [qwen_ref.ids(t) for t in TEXTS]
    assert ok(qwen.post("/tokenize", {"input": TEXTS}))["tokens"] == want
    assert len(want[-1]) == 512 and want[-1][-1] == eot


def test_qwen_mixed_batch_every_route(qwen, qwen_ref):
    want = [qwen_ref.embed(t) for t in TEXTS]
    got = openai_vectors(qwen, {"input": TEXTS})
    ollama = ok(qwen.post("/api/embed", {"input": TEXTS}))
    assert ollama["prompt_eval_count"] == sum(len(qwen_ref.ids(t)) for t in TEXTS)
    tei = ok(qwen.post("/embed", {"inputs": TEXTS, "truncate": True}))
    for route in (got, ollama["embeddings"], tei):
        assert len(route) == len(TEXTS)
        for v, w in zip(route, want):
            assert len(v) == 64
            close(v, w)


def test_qwen_unnormalised_and_dimensions(qwen, qwen_ref):
    raw = ok(qwen.post("/embed", {"inputs": TEXTS[:3], "normalize": False}))
    for v, t in zip(raw, TEXTS[:3]):
        close(v, qwen_ref.embed(t, normalize=False))
    for v, t in zip(openai_vectors(qwen, {"input": TEXTS[:3], "dimensions": 32}), TEXTS[:3]):
        close(v, qwen_ref.embed(t, dims=32))


def test_qwen_query_prompt_on_every_route(qwen, qwen_ref):
    want = [qwen_ref.embed(q, prompt=QWEN_QUERY) for q in QUERIES]
    for w, q in zip(want, QUERIES):
        close(w, qwen_ref.embed(q, task="query"))  # the named prompt is that string
    by_name = ok(qwen.post("/embed", {"inputs": QUERIES, "prompt_name": "query"}))
    by_input_type = openai_vectors(qwen, {"input": QUERIES, "input_type": "query"})
    by_task = openai_vectors(qwen, {"input": QUERIES, "task": "query"})
    by_option = ok(qwen.post("/api/embed", {"input": QUERIES, "options": {"task": "query"}}))["embeddings"]
    for route in (by_name, by_input_type, by_task, by_option):
        for v, w in zip(route, want):
            close(v, w)
    plain = openai_vectors(qwen, {"input": QUERIES})
    assert np.abs(np.array(plain[0]) - want[0]).max() > 1e-3, "the prompt must change the vector"


def test_qwen_document_prompt_is_empty(qwen, qwen_ref):
    docs = [DOCS[0], DOCS[2]]
    for route in (openai_vectors(qwen, {"input": docs, "input_type": "document"}),
                  ok(qwen.post("/embed", {"inputs": docs, "prompt_name": "document"}))):
        for v, d in zip(route, docs):
            close(v, qwen_ref.embed(d, prompt=""))
            close(v, qwen_ref.embed(d))


@pytest.mark.parametrize("variant,tol", [("int8", 1e-4), ("fp16", 1e-3)])
def test_qwen_quantized_files(start, dirs, variant, tol):
    """Compared with Python ONNX Runtime on the same file. Dynamic int8 quantizes activations per
    tensor, so its vectors depend on batch company: one text per request there."""
    ref = Model(dirs[QWEN], onnx_file=f"model_{variant}.onnx")
    server = start(EMBEDDINGS_MODEL_ID=str(dirs[QWEN]), RERANKER_MODEL_ID="none", ONNX_QUANTIZATION=variant)
    if variant == "int8":
        for t in TEXTS:
            close(openai_vectors(server, {"input": t})[0], ref.embed(t), tol)
        close(openai_vectors(server, {"input": QUERIES[0], "input_type": "query"})[0],
              ref.embed(QUERIES[0], prompt=QWEN_QUERY), tol)
    else:
        for v, t in zip(ok(server.post("/api/embed", {"input": TEXTS}))["embeddings"], TEXTS):
            close(v, ref.embed(t), tol)
        got = ok(server.post("/embed", {"inputs": QUERIES, "prompt_name": "query"}))
        for v, q in zip(got, QUERIES):
            close(v, ref.embed(q, prompt=QWEN_QUERY), tol)
    server.stop()


# --- gemma-embed-tiny: mean pooling, Dense, Normalize inside the graph ----------------------------

def test_gemma_serves_the_sentence_embedding_output(gemma, gemma_ref):
    want = [gemma_ref.embed(t) for t in TEXTS]
    routes = (openai_vectors(gemma, {"input": TEXTS}),
              ok(gemma.post("/api/embed", {"input": TEXTS}))["embeddings"],
              ok(gemma.post("/embed", {"inputs": TEXTS, "truncate": True})))
    for route in routes:
        for v, w in zip(route, want):
            assert len(v) == 96
            close(v, w)


def test_gemma_is_not_the_mean_pooled_hidden_state(gemma, gemma_ref):
    for t in TEXTS[:4]:
        states = gemma_ref.token_states(t)
        mean = states.mean(axis=0)
        mean /= np.linalg.norm(mean)
        assert mean.shape == (48,)
        v48 = np.array(openai_vectors(gemma, {"input": t, "dimensions": 48})[0])
        close(v48, gemma_ref.embed(t, dims=48))
        assert np.abs(v48 - mean).max() > 0.1, "served the mean-pooled last_hidden_state, not the Dense head"


def test_gemma_dimensions_truncate_the_96_then_renormalise(gemma, gemma_ref):
    for dims in (64, 32):
        got = openai_vectors(gemma, {"input": TEXTS[:3], "dimensions": dims})
        for v, t in zip(got, TEXTS[:3]):
            assert len(v) == dims and abs(np.linalg.norm(v) - 1) < 1e-5
            close(v, gemma_ref.embed(t, dims=dims))
    v = ok(gemma.post("/api/embed", {"input": TEXTS[1], "dimensions": 32}))["embeddings"][0]
    close(v, gemma_ref.embed(TEXTS[1], dims=32))


def test_gemma_prompts(gemma, gemma_ref):
    want_q = [gemma_ref.embed(q, prompt=GEMMA_QUERY) for q in QUERIES]
    for route in (openai_vectors(gemma, {"input": QUERIES, "input_type": "query"}),
                  ok(gemma.post("/embed", {"inputs": QUERIES, "prompt_name": "query"})),
                  ok(gemma.post("/api/embed", {"input": QUERIES, "options": {"task": "query"}}))["embeddings"]):
        for v, w in zip(route, want_q):
            close(v, w)
    docs = [DOCS[0], DOCS[1]]
    for v, d in zip(openai_vectors(gemma, {"input": docs, "input_type": "document"}), docs):
        close(v, gemma_ref.embed(d, prompt=GEMMA_DOCUMENT))
    got = ok(gemma.post("/embed", {"inputs": QUERIES[0], "prompt_name": "Classification"}))[0]
    close(got, gemma_ref.embed(QUERIES[0], prompt="task: classification | query: "))


# --- qwen3-rerank-tiny: score at the last non-pad token -------------------------------------------

def test_qwen_rerank_every_route(qwen, rerank_ref):
    q, window = rerank_ref.rerank_window(QUERY)
    long_doc = rerank_ref.tok.encode(DOCS[3], add_special_tokens=False).ids
    assert len(rerank_ref.windows(len(long_doc), window)) > 1
    want = rerank_ref.rerank_scores(QUERY, DOCS)
    order = sorted(range(len(DOCS)), key=lambda i: (-want[i], i))
    assert len({round(s, 4) for s in want}) == len(DOCS), "fixture scores must be distinct to test the order"
    for path in ("/v1/rerank", "/api/rerank", "/v2/rerank"):
        results = ok(qwen.post(path, {"query": QUERY, "documents": DOCS}))["results"]
        assert [x["index"] for x in results] == order, path
        close([x["relevance_score"] for x in results], [want[i] for i in order])
    tei = ok(qwen.post("/rerank", {"query": QUERY, "texts": DOCS}))
    assert [x["index"] for x in tei] == order
    close([x["score"] for x in tei], [want[i] for i in order])


def test_qwen_rerank_short_pairs(qwen, rerank_ref):
    docs = ["cat", "the cat sat", "berlin is the capital of germany"]
    want = rerank_ref.rerank_scores("cat", docs)
    results = ok(qwen.post("/v1/rerank", {"query": "cat", "documents": docs, "top_n": 3}))["results"]
    close([x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])], want)


# --- directories embedfn cannot honour are refused at start ---------------------------------------

def refused(binary, ort_lib, model_dir):
    env = {"PATH": "/usr/bin:/bin", "ORT_DYLIB_PATH": ort_lib, "RERANKER_MODEL_ID": "none", "HF_HUB_OFFLINE": "1",
           "EMBEDDINGS_MODEL_ID": str(model_dir), "PORT": "0", "HOST": "127.0.0.1"}
    p = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"embedfn started serving {model_dir.name} instead of refusing it: {out}")
    assert p.returncode != 0, out
    return out


def test_weighted_mean_pooling_is_refused(binary, ort_lib, dirs, tmp_path):
    d = shutil.copytree(dirs[QWEN], tmp_path / "qwen-weighted")
    cfg = d / "1_Pooling" / "config.json"
    pooling = json.loads(cfg.read_text())
    pooling.update(pooling_mode_weightedmean_tokens=True, pooling_mode_lasttoken=False)
    cfg.write_text(json.dumps(pooling))
    out = refused(binary, ort_lib, d)
    assert "1_Pooling/config.json" in out and "pooling_mode_weightedmean_tokens" in out, out


def test_dense_modules_without_sentence_embedding_output_are_refused(binary, ort_lib, dirs, tmp_path):
    d = shutil.copytree(dirs[GEMMA], tmp_path / "gemma-no-dense")
    path = d / "onnx" / "model.onnx"
    onnx.utils.extract_model(str(path), str(path), ["input_ids", "attention_mask"], ["last_hidden_state"])
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["last_hidden_state"]
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())
    out = refused(binary, ort_lib, d)
    assert "modules.json" in out and "Dense" in out, out
