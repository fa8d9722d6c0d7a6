"""Hardening: the API key, request limits, /metrics, dynamic batching under concurrency, and
faults (corrupt model, an inference error mid-request, SIGTERM with a request in flight)."""

import json
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from parity import close
from reference import Model

SENTENCES = [f"Sentence number {i} about {topic}." for i, topic in
             enumerate(["cats", "rust", "the sea", "tea", "music", "rain", "maths", "bread"] * 2)]


def metric(text, name):
    """The value of an unlabelled sample, or the sum over a family's labelled samples."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- API key -----------------------------------------------------------------------------------

def test_api_key_guards_every_route_but_health_and_is_never_logged(start, models_dir):
    key = "sk-embedfn-test-7f3a9c"
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none", API_KEY=key,
                   RUST_LOG="debug")
    assert server.get("/health").status_code == 200
    for method, path, body in [("GET", "/api/tags", None), ("POST", "/api/embed", {"input": "x"}),
                               ("POST", "/v1/embeddings", {"input": "x"}), ("GET", "/v1/models", None),
                               ("GET", "/metrics", None), ("GET", "/", None)]:
        for auth in [None, "Bearer wrong-key", f"Basic {key}", f"Bearer {key}x"]:
            headers = {"Authorization": auth} if auth else {}
            r = requests.request(method, server.url + path, json=body, headers=headers, timeout=30)
            assert r.status_code == 401, (path, auth, r.text)
            error = r.json()["error"]
            message = error["message"] if isinstance(error, dict) else error
            assert "API key" in message
        r = requests.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {key}"},
                             timeout=30)
        assert r.status_code == 200, (path, r.text)
    r = requests.post(server.url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.json()["error"]["code"] == "invalid_api_key"
    server.stop()
    assert key not in server.proc.stdout.read()


# --- limits ------------------------------------------------------------------------------------

def test_limits_answer_413_and_400(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"),
                   RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"),
                   MAX_REQUEST_TOKENS="40", MAX_INPUTS="3", MAX_DOCUMENTS="2", MAX_BODY_BYTES="2000")
    many = ["a b c d e f g h i j k l m n o p"] * 3  # 3 x 18 tokens > 40
    r = server.post("/api/embed", {"input": many})
    assert r.status_code == 413 and "tokens" in r.json()["error"], r.text[:300]
    r = server.post("/v1/embeddings", {"input": many})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert server.post("/api/embed", {"input": ["short"] * 3}).status_code == 200
    assert server.post("/api/embed", {"input": ["x"] * 4}).status_code == 400
    assert server.post("/v1/rerank", {"query": "q", "documents": ["a", "b", "c"]}).status_code == 400
    r = server.post("/v1/rerank", {"query": "q " * 30, "documents": ["d " * 30, "e"]})
    assert r.status_code == 413, r.text[:300]
    assert server.post("/api/embed", {"input": "x" * 3000}).status_code == 413
    assert server.get("/health").status_code == 200


# --- metrics and dynamic batching --------------------------------------------------------------

def test_concurrent_requests_are_batched_and_match_sequential_answers(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none", BATCH_WAIT_MS="20")
    ref = Model(models_dir / "minilm")
    sequential = [server.post("/api/embed", {"input": s}).json()["embeddings"][0] for s in SENTENCES]
    before = metric(server.get("/metrics").text, "embedfn_batch_size_count")
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda s: server.post("/api/embed", {"input": s}).json()["embeddings"][0],
                                   SENTENCES))
    passes = metric(server.get("/metrics").text, "embedfn_batch_size_count") - before
    assert passes < len(SENTENCES), f"{passes} forward passes for {len(SENTENCES)} concurrent requests"
    for got, seq, text in zip(concurrent, sequential, SENTENCES, strict=True):
        close(got, seq)
        close(got, ref.embed(text))


def test_metrics_report_requests_errors_tokens_and_latency(minilm):
    minilm.post("/api/embed", {"input": ["one", "two"]})
    minilm.post("/api/embed", {"input": 5})
    r = minilm.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert metric(text, 'embedfn_requests_total{route="/api/embed",status="200"}') >= 1
    assert metric(text, 'embedfn_request_errors_total{route="/api/embed",class="client"}') >= 1
    assert metric(text, "embedfn_tokens_total") > 0
    assert metric(text, 'embedfn_request_duration_seconds_count{route="/api/embed"}') >= 2
    assert 'embedfn_batch_size_bucket{le="+Inf"}' in text
    assert "# TYPE embedfn_forward_duration_seconds histogram" in text


# --- faults ------------------------------------------------------------------------------------

def test_corrupt_model_file_is_a_clear_startup_error(binary, ort_lib, models_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(models_dir / "minilm", broken)
    (broken / "onnx" / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf" * 100)
    env = {"PATH": "/usr/bin:/bin", "ORT_DYLIB_PATH": ort_lib, "RERANKER_MODEL_ID": "none",
           "EMBEDDINGS_MODEL_ID": str(broken), "PORT": "0"}
    p = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "model.onnx" in p.stderr, p.stderr


def test_inference_error_mid_request_is_500_json_and_server_keeps_serving(start, models_dir, tmp_path):
    # The fixture's graph has 514 position rows; claiming a longer context makes ONNX Runtime
    # fail inside the forward pass on a long input, as a broken model would.
    lying = tmp_path / "lying"
    shutil.copytree(models_dir / "jina-embed-tiny", lying)
    config = json.loads((lying / "config.json").read_text())
    config["max_position_embeddings"] = 4098
    (lying / "config.json").write_text(json.dumps(config))
    server = start(EMBEDDINGS_MODEL_ID=str(lying), RERANKER_MODEL_ID="none")
    for path, shape in [("/api/embed", str), ("/v1/embeddings", dict)]:
        r = server.post(path, {"input": "word " * 1500})
        assert r.status_code == 500, r.text
        assert isinstance(r.json()["error"], shape)
        assert server.post(path, {"input": "short text"}).status_code == 200
    assert server.proc.poll() is None


def test_sigterm_lets_in_flight_requests_finish(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none")
    texts = [f"a fairly ordinary sentence, number {i}, to keep the model busy for a while" for i in range(1500)]
    result = {}

    def slow():
        result["response"] = server.post("/api/embed", {"input": texts})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    t.join(120)
    r = result["response"]
    assert r.status_code == 200 and len(r.json()["embeddings"]) == len(texts)
    assert server.proc.wait(30) == 0
