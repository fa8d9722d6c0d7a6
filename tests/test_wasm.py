"""The Spin component (`embedfn-spin`, inference through `wasi:nn`) served by embedfn-host: every
route answers as the native server does on the same models (token ids equal, vectors within
1e-5, rerank order equal, the same 4xx bodies), concurrency, a guest trap, and the component's
imports."""

import base64
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from parity import close
from test_errors import CASES

#: Fields whose values legitimately differ between two processes (times, file facts).
VOLATILE = {"total_duration", "load_duration", "digest", "size", "modified_at", "expires_at", "size_vram"}


def same(a, b, path="$"):
    """Asserts two JSON values are equal, floats within 1e-5 and volatile fields ignored."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            if k not in VOLATILE:
                same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        if a and all(isinstance(x, float) for x in a + b):
            close(a, b)
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-5, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def wasm_minilm(start_host, models_dir):
    return start_host({"minilm": models_dir / "minilm"})


@pytest.fixture(scope="module")
def wasm_jina(start_host, models_dir):
    return start_host({"jina-embed-tiny": models_dir / "jina-embed-tiny",
                       "jina-rerank-tiny": models_dir / "jina-rerank-tiny"})


def exchange(server, method, path, body):
    r = requests.request(method, server.url + path, json=body, timeout=120)
    content = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
    return r.status_code, content


MINILM_REQUESTS = [
    ("GET", "/", None), ("GET", "/health", None), ("GET", "/api/tags", None), ("GET", "/api/ps", None),
    ("GET", "/api/version", None), ("GET", "/v1/models", None), ("POST", "/api/show", {"model": "minilm"}),
    ("POST", "/api/embed", {"model": "minilm", "input": ["Hello world", "Ünïcödé 🎉", "", "word " * 400]}),
    ("POST", "/api/embed", {"input": "dimensions", "dimensions": 64}),
    ("POST", "/api/embeddings", {"model": "minilm", "prompt": "legacy route"}),
    ("POST", "/v1/embeddings", {"input": ["a", "b"], "encoding_format": "float"}),
    ("POST", "/v1/embeddings", {"input": [[101, 7592, 2088, 102]], "encoding_format": "float"}),
    ("POST", "/embeddings", {"input": "binary", "encoding_format": "ubinary"}),
    ("POST", "/tokenize", {"input": ["Hello world", "你好，世界"]}),
]

JINA_REQUESTS = [
    ("GET", "/api/tags", None),
    ("POST", "/api/embed", {"input": ["Hello", "你好"], "options": {"task": "retrieval.passage"}, "dimensions": 32}),
    ("POST", "/api/embed", {"model": "jina-embed-tiny-query", "input": "a query"}),
    ("POST", "/v1/embeddings", {"input": ["Berlin is a city.", "It is big."], "late_chunking": True,
                                "task": "retrieval.passage", "encoding_format": "float"}),
    ("POST", "/v1/embeddings", {"input": "no normalisation", "normalized": False, "encoding_format": "float"}),
    ("POST", "/tokenize", {"input": ["Hello"], "task": "retrieval.query"}),
    ("POST", "/v1/rerank", {"query": "what is a panda?", "documents": [
        "The giant panda is a bear.", "Paris is in France.", "pandas " * 600], "top_n": 2}),
    ("POST", "/rerank", {"query": "q", "documents": [{"text": "a"}, {"text": "b"}], "return_documents": False}),
    ("POST", "/v2/rerank", {"query": "q", "documents": ["a", "b", "c"]}),
    ("POST", "/api/rerank", {"query": "q", "documents": ["a", "b"]}),
]


@pytest.mark.parametrize("method, path, body", MINILM_REQUESTS, ids=lambda x: str(x)[:40])
def test_minilm_routes_answer_as_native(minilm, wasm_minilm, method, path, body):
    native, wasm = exchange(minilm, method, path, body), exchange(wasm_minilm, method, path, body)
    assert native[0] == wasm[0] == 200
    same(wasm[1], native[1])


@pytest.mark.parametrize("method, path, body", JINA_REQUESTS, ids=lambda x: str(x)[:40])
def test_jina_fixture_routes_answer_as_native(jina, wasm_jina, method, path, body):
    native, wasm = exchange(jina, method, path, body), exchange(wasm_jina, method, path, body)
    assert native[0] == wasm[0] == 200
    same(wasm[1], native[1])


def test_base64_vectors_match_native(minilm, wasm_minilm):
    body = {"input": ["Hello world", "second"]}  # the openai client's default encoding
    decode = lambda r: [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]]
    body["encoding_format"] = "base64"
    for n, w in zip(decode(minilm.post("/v1/embeddings", body)), decode(wasm_minilm.post("/v1/embeddings", body))):
        close(w, n)


def raw_exchange(server, method, path, body):
    """Status and body text; `body` as raw bytes when it is bytes, else as JSON."""
    data = body if isinstance(body, bytes) else None
    r = requests.request(method, server.url + path, data=data, json=None if data is not None else body, timeout=60)
    return r.status_code, r.text


@pytest.mark.parametrize("method, path, body, status, fragment", CASES, ids=lambda x: str(x)[:30])
def test_bad_input_answers_as_native(jina, wasm_jina, method, path, body, status, fragment):
    native, wasm = raw_exchange(jina, method, path, body), raw_exchange(wasm_jina, method, path, body)
    assert wasm == native
    assert wasm[0] == status


def test_16_concurrent_requests_answer_as_sequential_ones(wasm_jina):
    bodies = [{"input": f"text number {i}", "options": {"task": ["retrieval.query", "text-matching"][i % 2]}}
              for i in range(16)]
    sequential = [wasm_jina.post("/api/embed", b).json()["embeddings"] for b in bodies]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda b: wasm_jina.post("/api/embed", b).json()["embeddings"], bodies))
    for c, s in zip(concurrent, sequential, strict=True):
        close(c, s)


def test_guest_trap_answers_500_and_the_host_keeps_serving(start_host, models_dir):
    # 24 MiB of linear memory holds the pre-initialised MiniLM component and ordinary requests;
    # a thousand 256-token inputs (their token encodings alone) exhaust it, and the guest traps.
    host = start_host({"minilm": models_dir / "minilm"}, "--max-memory", "24")
    assert host.post("/api/embed", {"input": "fits"}).status_code == 200
    r = host.post("/api/embed", {"input": ["lorem ipsum dolor sit amet " * 40] * 1000})
    assert r.status_code == 500
    assert "trapped" in r.json()["error"]
    assert host.post("/api/embed", {"input": "still serving"}).status_code == 200
    assert host.proc.poll() is None


def test_component_imports_only_wasi_interfaces(component):
    tools = Path(sys.executable).parent / "wasm-tools"
    wit = subprocess.run([str(tools), "component", "wit", component], check=True, capture_output=True,
                         text=True).stdout
    imports = [line.split()[1] for line in wit.splitlines() if line.strip().startswith("import ")]
    assert imports and all(i.startswith("wasi:") for i in imports), imports
    assert any(i.startswith("wasi:nn/graph@0.2.0-rc-2024-10-28") for i in imports)
    assert "export wasi:http/incoming-handler@0.2.0;" in wit
    assert os.path.getsize(component) < 8 * 1024 * 1024


def test_spin_manifest_declares_the_component():
    import tomllib
    manifest = tomllib.loads((Path(__file__).parent.parent / "spin.toml").read_text())
    assert manifest["spin_manifest_version"] == 2
    (trigger,) = manifest["trigger"]["http"]
    component = manifest["component"][trigger["component"]]
    assert trigger["route"] == "/..."
    assert component["source"] == "target/spin/embedfn.wasm"  # the pre-initialised tract build
    assert component["build"]["command"].endswith("scripts/build-spin.sh")
    # The model is inside the pre-initialised component: the application ships no files and
    # needs no outbound hosts, which is what keeps it under hosted Spin's 50 MiB app limit.
    assert "files" not in component and "allowed_outbound_hosts" not in component
    assert "models/**" in component["build"]["watch"]
