"""Bad input gets the right 4xx with a JSON error in the API's own shape, and the server keeps
serving; start-up problems exit non-zero with a clear message."""

import subprocess

import pytest
import requests

LONG = "word " * 2000

# (method, path, raw body or JSON, status, fragment of the message)
CASES = [
    ("POST", "/api/embed", b"{not json", 400, "invalid request body"),
    ("POST", "/api/embed", b"", 400, "body is empty"),
    ("POST", "/api/embed", b'{"input": "x"', 400, "invalid request body"),
    ("POST", "/api/embed", {"input": 5}, 400, "must be a string or an array of strings"),
    ("POST", "/api/embed", {"input": ["ok", 3]}, 400, "must be a string or an array of strings"),
    ("POST", "/api/embed", {"input": []}, 400, "must not be empty"),
    ("POST", "/api/embed", {}, 400, "'input' is required"),
    ("POST", "/api/embed", {"input": "x", "model": "nope"}, 404, "not found"),
    ("POST", "/api/embed", {"input": "x", "options": {"task": "poetry"}}, 400, "retrieval.query, retrieval.passage"),
    ("POST", "/api/embed", {"input": "x", "options": {"task": 3}}, 400, "options.task"),
    ("POST", "/api/embed", {"input": "x", "dimensions": 0}, 400, "dimensions"),
    ("POST", "/api/embed", {"input": "x", "dimensions": 100000}, 400, "dimensions"),
    ("POST", "/api/embed", {"input": "x", "dimensions": -1}, 400, "invalid request body"),
    ("POST", "/api/embed", {"input": LONG, "truncate": False}, 400, "exceeds the context length"),
    ("POST", "/api/embed", {"input": ["x"] * 3000}, 400, "too many inputs"),
    ("POST", "/api/embeddings", {"prompt": 7}, 400, "invalid request body"),
    ("POST", "/v1/embeddings", {"input": "x", "encoding_format": "int4"}, 400, "unknown encoding format"),
    ("POST", "/v1/embeddings", {"input": [[1, 2], "x"]}, 400, "token ids"),
    ("POST", "/v1/embeddings", {"input": [[999999999]]}, 400, "outside the vocabulary"),
    ("POST", "/v1/embeddings", {"input": [[]]}, 400, "must not be empty"),
    ("POST", "/v1/embeddings", {"input": "x", "task": "poetry"}, 400, "valid tasks are"),
    ("POST", "/v1/embeddings", {"input": [LONG] * 3, "late_chunking": True}, 400, "late_chunking"),
    ("POST", "/v1/embeddings", {"input": LONG, "truncate": False}, 400, "exceeds the context length"),
    ("POST", "/v1/rerank", {"query": "q"}, 400, "documents"),
    ("POST", "/v1/rerank", {"documents": ["d"]}, 400, "'query' is required"),
    ("POST", "/v1/rerank", {"query": "q", "documents": []}, 400, "documents"),
    ("POST", "/v1/rerank", {"query": "q", "documents": [1]}, 400, "invalid request body"),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, 400, "too many documents"),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"], "model": "jina-embed-tiny"}, 404, "not found"),
    ("POST", "/api/rerank", {"query": "q", "documents": "d"}, 400, "invalid request body"),
    ("POST", "/api/show", {}, 400, "'model' is required"),
    ("POST", "/api/show", {"model": "nope"}, 404, "not found"),
    ("GET", "/api/embed", None, 405, "not allowed"),
    ("POST", "/api/tags", {}, 405, "not allowed"),
    ("GET", "/nope", None, 404, "no route"),
    ("GET", "/v1/nope", None, 404, "no route"),
]


@pytest.mark.parametrize("method,path,body,status,fragment", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_request(jina, method, path, body, status, fragment):
    data = body if isinstance(body, bytes) else None
    r = requests.request(method, jina.url + path, data=data, json=None if data is not None else body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    message = err["message"] if isinstance(err, dict) else err
    assert fragment in message, message
    if path.startswith("/v1/"):
        assert set(err) == {"message", "type", "param", "code"}
    assert jina.get("/health").status_code == 200


def test_oversize_body_is_413(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none", MAX_BODY_BYTES="1000")
    r = server.post("/api/embed", {"input": "x" * 2000})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]
    r = server.post("/v1/embeddings", {"input": "x" * 2000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert server.post("/api/embed", {"input": "small"}).status_code == 200
    server.stop()


def test_model_left_out_answers_clearly(minilm):
    r = minilm.post("/v1/rerank", {"query": "q", "documents": ["d"]})
    assert r.status_code == 404
    assert "RERANKER_MODEL_ID=none" in r.json()["error"]["message"]


def test_head_and_root(jina):
    assert jina.get("/").text == "Ollama is running"
    r = requests.head(jina.url + "/api/version", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert jina.get("/api/version").json()["version"]


@pytest.mark.parametrize("env,fragment", [
    ({"EMBEDDINGS_MODEL_ID": "/no/such/model"}, "neither a directory nor a Hugging Face repo id"),
    ({"ONNX_QUANTIZATION": "q3"}, "ONNX_QUANTIZATION"),
    ({"PORT": "http"}, "PORT"),
    ({"EMBEDDINGS_MODEL_ID": "none", "RERANKER_MODEL_ID": "none"}, "nothing to serve"),
    ({"ORT_DYLIB_PATH": "/no/libonnxruntime.so", "EMBEDFN_CACHE": "/nonexistent"}, "ONNX Runtime library not found"),
])
def test_startup_errors_exit_nonzero(binary, ort_lib, models_dir, env, fragment):
    full = {"PATH": "/usr/bin:/bin", "ORT_DYLIB_PATH": ort_lib, "RERANKER_MODEL_ID": "none", "HF_HUB_OFFLINE": "1",
            "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"), "PORT": "0"}
    full.update(env)
    p = subprocess.run([binary], env=full, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert fragment in p.stderr, p.stderr


def test_quantization_file_missing_is_clear(binary, ort_lib, models_dir):
    env = {"PATH": "/usr/bin:/bin", "ORT_DYLIB_PATH": ort_lib, "RERANKER_MODEL_ID": "none",
           "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"), "ONNX_QUANTIZATION": "q4", "PORT": "0"}
    p = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "model_q4.onnx" in p.stderr and "model.onnx" in p.stderr
