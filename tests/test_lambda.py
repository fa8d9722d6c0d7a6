"""The real `embedfn` binary in Lambda mode, driven through the Runtime API emulator with the
event fixtures in `fixtures/lambda/`: API Gateway REST and HTTP APIs, a Function URL, an ALB
and a direct invocation, checked against the independent reference."""

import base64
import json
from pathlib import Path

import pytest

import reports
from lambda_runtime_api import RuntimeApi, start_function
from parity import close
from reference import Model

FIXTURES = Path(__file__).parent / "fixtures" / "lambda"


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def content_type(answer):
    """The Content-Type of a Lambda HTTP response (REST APIs get multiValueHeaders)."""
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (answer.get("multiValueHeaders") or {}).items()}
    return headers.get("content-type") or multi.get("content-type", [None])[0]


def http_body(answer):
    """The decoded body of a Lambda HTTP response (API Gateway, Function URL or ALB shape)."""
    body = answer["body"]
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


@pytest.fixture(scope="module")
def function(binary, ort_lib, models_dir):
    api = RuntimeApi()
    proc = start_function(binary, api, {
        "ORT_DYLIB_PATH": ort_lib,
        "ORT_INTRA_THREADS": "1",
        "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"),
        "RERANKER_MODEL_ID": str(models_dir / "jina-rerank-tiny"),
    })
    assert api.wait_ready(proc), f"function did not poll for events: {proc.poll()} {api.init_errors}"
    yield api, proc
    proc.terminate()
    proc.wait(10)
    api.close()


def test_api_gateway_rest_event(function, minilm_ref):
    api, _ = function
    kind, answer = api.invoke(fixture("apigw-v1"))
    assert kind == "response"
    assert answer["statusCode"] == 200
    assert content_type(answer) == "application/json"
    body = http_body(answer)
    for got, text in zip(body["embeddings"], ["Hello world", "Lambda says hi"], strict=True):
        close(got, minilm_ref.embed(text))


def test_http_api_event_with_base64_body(function, minilm_ref):
    api, _ = function
    kind, answer = api.invoke(fixture("apigw-v2"))
    assert (kind, answer["statusCode"]) == ("response", 200)
    assert content_type(answer) == "application/json"
    close(http_body(answer)["data"][0]["embedding"], minilm_ref.embed("Hello world"))


def test_function_url_event_reranks_like_the_reference(function, models_dir):
    api, _ = function
    event = fixture("function-url")
    kind, answer = api.invoke(event)
    assert (kind, answer["statusCode"]) == ("response", 200)
    request = json.loads(event["body"])
    scores = Model(models_dir / "jina-rerank-tiny").rerank_scores(request["query"], request["documents"])
    results = http_body(answer)["results"]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: request["top_n"]]
    assert [r["index"] for r in results] == order
    close([r["relevance_score"] for r in results], [scores[i] for i in order])


def test_alb_event(function):
    api, _ = function
    kind, answer = api.invoke(fixture("alb"))
    assert (kind, answer["statusCode"]) == ("response", 200)
    assert [m["name"] for m in http_body(answer)["models"]] == ["minilm", "jina-rerank-tiny"]


def test_direct_invocation_with_an_ollama_body(function, minilm_ref):
    api, _ = function
    kind, answer = api.invoke(fixture("direct"))
    assert kind == "response"
    for got, text in zip(answer["embeddings"], ["Hello world", "Lambda says hi"], strict=True):
        close(got, minilm_ref.embed(text))
    kind, answer = api.invoke({"model": "minilm", "prompt": "Hello world"})
    close(answer["embedding"], minilm_ref.embed("Hello world"))


@pytest.mark.parametrize("body, status", [
    ('{"model": "minilm", "input": ', 400),
    ('{"model": "minilm", "input": 42}', 400),
    ('{"model": "no-such-model", "input": "x"}', 404),
    ('[]', 400),
])
def test_bad_requests_are_http_errors_and_the_function_keeps_serving(function, minilm_ref, body, status):
    api, proc = function
    event = fixture("apigw-v1")
    event["body"] = body
    kind, answer = api.invoke(event)
    assert (kind, answer["statusCode"]) == ("response", status)
    assert isinstance(http_body(answer)["error"], str)
    kind, answer = api.invoke(fixture("apigw-v1"))
    assert (kind, answer["statusCode"]) == ("response", 200)
    assert proc.poll() is None


def test_bad_direct_payload_answers_an_error_body(function):
    api, proc = function
    kind, answer = api.invoke(b'"just a string"')
    assert kind == "response"
    assert "error" in answer
    kind, answer = api.invoke({"model": "minilm", "input": ["ok"]})
    assert len(answer["embeddings"]) == 1
    assert proc.poll() is None


def test_init_error_is_reported_to_the_runtime_api(binary, ort_lib, tmp_path):
    api = RuntimeApi()
    try:
        missing = tmp_path / "no-such-model"
        proc = start_function(binary, api, {
            "ORT_DYLIB_PATH": ort_lib,
            "EMBEDDINGS_MODEL_ID": str(missing),
            "RERANKER_MODEL_ID": "none",
        })
        assert proc.wait(60) != 0
        assert len(api.init_errors) == 1, proc.stderr.read()
        error = api.init_errors[0]
        assert error["errorType"] == "Runtime.InitError"
        assert str(missing) in error["errorMessage"]
        assert api.first_poll is None
    finally:
        api.close()


def test_logs_are_json_lines_in_lambda(binary, ort_lib, models_dir):
    api = RuntimeApi()
    try:
        proc = start_function(binary, api, {
            "ORT_DYLIB_PATH": ort_lib,
            "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"),
            "RERANKER_MODEL_ID": "none",
        })
        assert api.wait_ready(proc)
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
        lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
        assert any(line["fields"].get("message") == "init done" for line in lines), stderr
        assert all({"timestamp", "level", "fields"} <= line.keys() for line in lines)
    finally:
        api.close()


@pytest.mark.parametrize("snap_start", [True, False], ids=["snap-start", "on-demand"])
def test_snap_start_warms_every_model_before_the_snapshot(binary, ort_lib, models_dir, minilm_ref, snap_start):
    """With AWS_LAMBDA_INITIALIZATION_TYPE=snap-start the init loads and warms every model, then
    waits at restore/next (the snapshot); after the restore it answers as always. On demand,
    restore/next is never called."""
    api = RuntimeApi()
    extra = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"} if snap_start else {}
    proc = start_function(binary, api, {
        "ORT_DYLIB_PATH": ort_lib,
        "ORT_INTRA_THREADS": "1",
        "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"),
        "RERANKER_MODEL_ID": str(models_dir / "jina-rerank-tiny"),
    }, extra)
    try:
        assert api.wait_ready(proc), f"function did not poll for events: {proc.poll()} {api.init_errors}"
        if snap_start:
            assert api.restored is not None and api.restored <= api.first_poll
        else:
            assert api.restored is None
        kind, answer = api.invoke(fixture("apigw-v1"))
        assert (kind, answer["statusCode"]) == ("response", 200)
        for got, text in zip(http_body(answer)["embeddings"], ["Hello world", "Lambda says hi"], strict=True):
            close(got, minilm_ref.embed(text))
        assert api.restore_errors == [] and api.init_errors == []
    finally:
        proc.terminate()
        proc.wait(10)
        api.close()
    logs = proc.stderr.read()
    assert ("models warmed for the snapshot" in logs) == snap_start, logs[-2000:]


def url_event(method, path, body=None):
    """A Function URL event for `method path` with a JSON body."""
    event = fixture("function-url")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = json.dumps(body) if body is not None else ""
    return event


def test_managed_instances_run_invocations_concurrently_and_batch_them(binary, ort_lib, models_dir, minilm_ref):
    """AWS_LAMBDA_MAX_CONCURRENCY=8 (Lambda Managed Instances): 48 invocations sent 8 at a time
    all answer like the reference, and the dynamic batcher merges them into fewer passes."""
    import concurrent.futures
    import re

    api = RuntimeApi()
    proc = start_function(binary, api, {
        "ORT_DYLIB_PATH": ort_lib,
        "ORT_INTRA_THREADS": "1",
        "EMBEDDINGS_MODEL_ID": str(models_dir / "minilm"),
        "RERANKER_MODEL_ID": "none",
        "BATCH_WAIT_MS": "20",
    }, {"AWS_LAMBDA_MAX_CONCURRENCY": "8"})
    try:
        assert api.wait_ready(proc), f"function did not poll for events: {proc.poll()} {api.init_errors}"
        texts = [f"invocation {i}: " + "words " * (i % 7) for i in range(48)]

        def one(text):
            kind, answer = api.invoke(url_event("POST", "/v1/embeddings", {"input": text}))
            assert (kind, answer["statusCode"]) == ("response", 200), answer
            return http_body(answer)["data"][0]["embedding"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            vectors = list(pool.map(one, texts))
        for got, text in zip(vectors, texts, strict=True):
            close(got, minilm_ref.embed(text))
        kind, answer = api.invoke(url_event("GET", "/metrics"))
        metrics = answer["body"]
        passes = int(re.search(r"^embedfn_batch_size_count (\d+)", metrics, re.M).group(1))
        reports.LINES.append(f"Lambda Managed Instances, 8 at a time: 48 invocations in {passes} forward passes")
        assert passes < 48, f"{passes} passes for 48 concurrent invocations"
    finally:
        proc.terminate()
        proc.wait(10)
        api.close()
