"""Hugging Face text-embeddings-inference (TEI) routes, Spin's remote LLM contract, several models
in one server, per-request length, and the truth of /api/tags — against the real `embedfn`
binary, every vector and score compared with the independent reference (tests/reference.py).

One server holds two embedders (minilm, the default, and jina-embed-tiny) and a reranker.
"""

import math

import numpy as np
import pytest
import requests
from huggingface_hub import InferenceClient
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

from parity import close
from reference import finish, onnx_parameters


@pytest.fixture(scope="module")
def multi(start, models_dir):
    return start(EMBEDDINGS_MODEL_ID=f"{models_dir / 'minilm'},{models_dir / 'jina-embed-tiny'}",
                 RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"), MAX_INPUTS="64")


def tei_error(r, status, kind):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
    return body["error"]


# --- TEI ------------------------------------------------------------------------------------------

def test_tei_embed_shapes_and_vectors(multi, minilm_ref):
    r = multi.post("/embed", {"inputs": "Hello world"})
    assert r.status_code == 200, r.text
    close(r.json()[0], minilm_ref.embed("Hello world"))
    texts = ["Hello world", "The quick brown fox"]
    out = multi.post("/embed", {"inputs": texts, "normalize": False}).json()
    for v, t in zip(out, texts):
        close(v, minilm_ref.embed(t, normalize=False))
    ids = minilm_ref.ids("Hello world")
    close(multi.post("/embed", {"inputs": [ids]}).json()[0], minilm_ref.embed("Hello world"))
    close(multi.post("/embed", {"inputs": "Hello", "dimensions": 64}).json()[0],
          minilm_ref.embed("Hello", dims=64))


def test_tei_truncation_direction_and_too_long(multi, minilm_ref):
    long = " ".join(f"word{i}" for i in range(400))  # far over minilm's 256 tokens
    content = minilm_ref.tok.encode(long, add_special_tokens=False).ids
    cls, sep = minilm_ref.tok.token_to_id("[CLS]"), minilm_ref.tok.token_to_id("[SEP]")
    keep = minilm_ref.max_length - 2
    for direction, part in (("Right", content[:keep]), ("Left", content[-keep:]), ("left", content[-keep:])):
        r = multi.post("/embed", {"inputs": long, "truncation_direction": direction})
        assert r.status_code == 200, r.text
        want = finish(minilm_ref.run([cls, *part, sep])[0].mean(axis=0), None, True)
        close(r.json()[0], want)
    # TEI answers an over-long input with truncate=false as a validation error: 422.
    tei_error(multi.post("/embed", {"inputs": long, "truncate": False}), 422, "Validation")
    tei_error(multi.post("/embed", {"inputs": []}), 400, "Empty")
    tei_error(multi.post("/embed", {"inputs": ["x"] * 65}), 422, "Validation")
    tei_error(multi.post("/embed", {"inputs": 5}), 422, "Validation")
    tei_error(multi.post("/embed", {"inputs": "x", "model": "nope"}), 404, "Validation")


def test_tei_prompt_name_and_model_choice(multi, embed_ref):
    r = multi.post("/embed", {"inputs": "query text", "prompt_name": "retrieval.query", "model": "jina-embed-tiny"})
    assert r.status_code == 200, r.text
    close(r.json()[0], embed_ref.embed("query text", task="retrieval.query"))


def test_tei_embed_all_is_the_token_output(multi, minilm_ref):
    r = multi.post("/embed_all", {"inputs": ["Hello world", "a"]})
    assert r.status_code == 200, r.text
    out = r.json()
    for tokens, text in zip(out, ["Hello world", "a"]):
        want = minilm_ref.run(minilm_ref.ids(text))[0]
        assert np.array(tokens).shape == want.shape
        assert np.abs(np.array(tokens) - want).max() < 1e-4


def test_tei_rerank(multi, rerank_ref):
    query, texts = "what is a panda?", ["hi", "The giant panda is a bear native to China.", "pandas is a library"]
    want = rerank_ref.rerank_scores(query, texts)
    r = multi.post("/rerank", {"query": query, "texts": texts, "return_text": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert [x["index"] for x in ranks] == sorted(range(3), key=lambda i: -want[i])
    for x in ranks:
        assert math.isclose(x["score"], want[x["index"]], abs_tol=1e-5)
        assert x["text"] == texts[x["index"]]
    raw = multi.post("/rerank", {"query": query, "texts": texts, "raw_scores": True}).json()
    for x in raw:
        p = want[x["index"]]
        assert math.isclose(x["score"], math.log(p / (1 - p)), abs_tol=1e-3)
        assert "text" not in x
    tei_error(multi.post("/rerank", {"query": query, "texts": []}), 400, "Empty")
    # The same path still serves Jina / Cohere bodies (`documents`), in their own shape.
    jina = multi.post("/rerank", {"query": query, "documents": texts}).json()
    assert jina["results"][0]["index"] == ranks[0]["index"] and "usage" in jina


def test_tei_similarity_tokenize_decode(multi, minilm_ref):
    src, others = "A man is eating food.", ["A man is eating pasta.", "A cat sleeps."]
    r = multi.post("/similarity", {"inputs": {"source_sentence": src, "sentences": others}})
    assert r.status_code == 200, r.text
    for got, o in zip(r.json(), others):
        assert math.isclose(got, float(np.dot(minilm_ref.embed(src), minilm_ref.embed(o))), abs_tol=1e-5)
    tei_error(multi.post("/similarity", {"inputs": {"source_sentence": src, "sentences": []}}), 400, "Empty")

    text = "Hello wörld"
    toks = multi.post("/tokenize", {"inputs": text}).json()
    enc = minilm_ref.tok.encode(text)
    assert [t["id"] for t in toks[0]] == enc.ids
    assert toks[0][0] == {"id": enc.ids[0], "text": "[CLS]", "special": True, "start": None, "stop": None}
    for t, (a, b) in zip(toks[0][1:-1], enc.offsets[1:-1]):  # Python gives char offsets, TEI bytes
        assert (t["start"], t["stop"], t["special"]) == (len(text[:a].encode()), len(text[:b].encode()), False)
        assert t["text"] == text[a:b]
    plain = multi.post("/tokenize", {"inputs": [text, "x"], "add_special_tokens": False}).json()
    assert [t["id"] for t in plain[0]] == enc.ids[1:-1] and len(plain) == 2
    # `/tokenize` with embedfn's own `input` keeps its shape.
    assert multi.post("/tokenize", {"input": text}).json()["tokens"] == [enc.ids]

    dec = multi.post("/decode", {"ids": enc.ids}).json()
    assert dec == [minilm_ref.tok.decode(enc.ids, skip_special_tokens=True)]
    dec = multi.post("/decode", {"ids": [enc.ids, enc.ids[:2]], "skip_special_tokens": False}).json()
    assert dec == [minilm_ref.tok.decode(enc.ids, skip_special_tokens=False),
                   minilm_ref.tok.decode(enc.ids[:2], skip_special_tokens=False)]


def test_tei_info_lists_every_model(multi):
    info = multi.get("/info").json()
    assert info["model_id"] == "minilm" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256 and info["model_dtype"] == "int8"
    assert info["max_client_batch_size"] == 64 and info["auto_truncate"] is True
    assert [m["model_id"] for m in info["models"]] == ["minilm", "jina-embed-tiny", "jina-rerank-tiny"]
    assert "reranker" in info["models"][2]["model_type"]


def test_huggingface_hub_inference_client(multi, minilm_ref):
    """huggingface_hub's InferenceClient with the server's URL as the model: it POSTs to `/`."""
    client = InferenceClient(model=multi.url)
    v = client.feature_extraction("Hello world")
    assert v.shape == (1, 384)
    close(v[0], minilm_ref.embed("Hello world"))
    v = client.feature_extraction("Hello world", normalize=False, truncation_direction="left")
    close(v[0], minilm_ref.embed("Hello world", normalize=False))
    sims = client.sentence_similarity("A man is eating food.", other_sentences=["A man is eating pasta."])
    want = float(np.dot(minilm_ref.embed("A man is eating food."), minilm_ref.embed("A man is eating pasta.")))
    assert math.isclose(sims[0], want, abs_tol=1e-5)


def test_llamaindex_text_embeddings_inference(multi, minilm_ref):
    """LlamaIndex's TEI class: `POST {base_url}/embed {"inputs": [..], "truncate": true}`."""
    emb = TextEmbeddingsInference(model_name="minilm", base_url=multi.url, timeout=60)
    close(emb.get_text_embedding("Hello world"), minilm_ref.embed("Hello world"))
    for v, t in zip(emb.get_text_embedding_batch(["foo", "bar baz"]), ["foo", "bar baz"]):
        close(v, minilm_ref.embed(t))


def test_root_on_a_reranker_only_server_reranks(start, models_dir, rerank_ref):
    server = start(EMBEDDINGS_MODEL_ID="none", RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"))
    r = server.post("/", {"query": "q", "texts": ["a", "b"]})
    assert r.status_code == 200, r.text
    want = rerank_ref.rerank_scores("q", ["a", "b"])
    for x in r.json():
        assert math.isclose(x["score"], want[x["index"]], abs_tol=1e-5)
    tei_error(server.post("/", {"inputs": "x"}), 422, "Validation")  # no `texts`
    assert server.get("/").text == "Ollama is running"


# --- Spin's remote LLM contract -------------------------------------------------------------------

def test_spin_default_remote_embed_exactly_as_spin_sends_it(start, models_dir, minilm_ref):
    """Spin's llm-remote-http (default API type): `POST {url}/embed`, a JSON string body with no
    content type, `authorization: bearer <token>`; it reads `embeddings` and
    `usage.promptTokenCount`. The model is named as Spin names it (`all-minilm-l6-v2`)."""
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none", API_KEY="spin-token")
    body = '{"model":"minilm","input":["Hello world","The quick brown fox"]}'
    r = requests.post(server.url + "/embed", data=body.encode(), timeout=60,
                      headers={"authorization": "bearer spin-token"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"embeddings", "usage"}
    close(out["embeddings"][0], minilm_ref.embed("Hello world"))
    close(out["embeddings"][1], minilm_ref.embed("The quick brown fox"))
    assert out["usage"] == {"promptTokenCount": len(minilm_ref.ids("Hello world")) +
                            len(minilm_ref.ids("The quick brown fox"))}
    r = requests.post(server.url + "/embed", data=body.encode(), timeout=60)
    assert r.status_code == 401
    # `api_type = "open_ai"`: `/v1/embeddings` with explicit nulls.
    r = requests.post(server.url + "/v1/embeddings", timeout=60, headers={"authorization": "bearer spin-token"},
                      json={"input": ["Hello world"], "model": "minilm", "encoding_format": None,
                            "dimensions": None, "user": None})
    assert r.status_code == 200, r.text
    close(r.json()["data"][0]["embedding"], minilm_ref.embed("Hello world"))
    assert r.json()["usage"]["prompt_tokens"] == len(minilm_ref.ids("Hello world"))


def test_spin_model_names_match_case_insensitively(multi):
    r = multi.post("/embed", {"model": "MiniLM", "input": ["x"]})
    assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384
    r = multi.post("/embed", {"model": "all-minilm-l6-v2", "input": ["x"]})
    assert r.status_code == 404 and "not found" in r.json()["error"]


# --- several models, per-request length, truthful listings ----------------------------------------

def test_several_models_chosen_by_name(multi, minilm_ref, embed_ref):
    a = multi.post("/api/embed", {"input": "Hello"}).json()  # default: the first
    close(a["embeddings"][0], minilm_ref.embed("Hello"))
    b = multi.post("/api/embed", {"model": "jina-embed-tiny:latest", "input": "Hello"}).json()
    close(b["embeddings"][0], embed_ref.embed("Hello"))
    c = multi.post("/v1/embeddings", {"model": "jina-embed-tiny-query", "input": "Hello"}).json()
    close(c["data"][0]["embedding"], embed_ref.embed("Hello", task="retrieval.query"))
    assert [m["id"] for m in multi.get("/v1/models").json()["data"]] == \
        ["minilm", "jina-embed-tiny", "jina-rerank-tiny"]
    assert multi.get("/health").json()["embedding_models"] == ["minilm", "jina-embed-tiny"]


def test_openai_max_length_truncates(multi, minilm_ref):
    text = "The quick brown fox jumps over the lazy dog"
    ids = minilm_ref.ids(text)
    r = multi.post("/v1/embeddings", {"input": text, "max_length": 6})
    assert r.status_code == 200, r.text
    want = finish(minilm_ref.run(ids[:5] + [ids[-1]])[0].mean(axis=0), None, True)
    close(r.json()["data"][0]["embedding"], want)
    assert r.json()["usage"]["prompt_tokens"] == 6
    r = multi.post("/v1/embeddings", {"input": text, "max_length": 6, "truncate": False})
    assert r.status_code == 400 and "context length" in r.json()["error"]["message"]
    long = "word " * 400
    r = multi.post("/api/embed", {"input": long, "truncate": False})
    assert r.status_code == 400 and "the input length exceeds the context length" in r.json()["error"]


def test_tags_and_show_tell_the_truth(multi, models_dir):
    tags = {m["name"]: m["details"] for m in multi.get("/api/tags").json()["models"]}
    # all-MiniLM-L6-v2 int8: 22,617,680 weight elements in the graph's initializers.
    assert tags["minilm"]["parameter_size"] == "22.6M"
    assert tags["minilm"]["quantization_level"] == "Q8_0"
    assert tags["jina-embed-tiny"]["quantization_level"] == "F32"
    # Weights in onnx/model.onnx_data, counted from the graph file alone.
    tiny = onnx_parameters(models_dir / "jina-embed-tiny" / "onnx" / "model.onnx")
    assert tags["jina-embed-tiny"]["parameter_size"] == f"{tiny / 1e3:.1f}K"
    assert tags["jina-rerank-tiny"]["kind"] == "rerank"
    show = multi.post("/api/show", {"model": "minilm"}).json()
    assert show["model_info"]["general.parameter_count"] == 22617680
    assert show["details"]["quantization_level"] == "Q8_0"
