"""Shared fixtures: the test models, the ONNX Runtime library, and a real `embedfn` server.

Everything a test needs is fetched or built by the project's scripts; nothing is skipped when it
is missing: a missing model or binary fails the run.
"""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

import parity
import reports
from reference import Model

ROOT = Path(__file__).resolve().parent.parent
ORT_CACHE = tempfile.mkdtemp(prefix="embedfn-ort-cache-")


def script_output(name):
    out = subprocess.run([str(ROOT / "scripts" / name)], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def models_dir():
    path = Path(os.environ.get("EMBEDFN_MODELS") or script_output("fetch-test-models.sh"))
    for name in ("minilm", "jina-embed-tiny", "jina-rerank-tiny"):
        assert (path / name / "tokenizer.json").is_file(), f"test model {name} missing in {path}"
    return path


@pytest.fixture(scope="session")
def minilm_ref(models_dir):
    """The independent reference (Python onnxruntime + tokenizers) on MiniLM int8."""
    return Model(models_dir / "minilm")


@pytest.fixture(scope="session")
def embed_ref(models_dir):
    """The reference on the Jina-shaped embedder fixture."""
    return Model(models_dir / "jina-embed-tiny")


@pytest.fixture(scope="session")
def rerank_ref(models_dir):
    """The reference on the Jina-shaped reranker fixture."""
    return Model(models_dir / "jina-rerank-tiny")


@pytest.fixture(scope="session")
def ort_lib():
    lib = os.environ.get("ORT_DYLIB_PATH") or script_output("fetch-onnxruntime.sh")
    assert Path(lib).is_file(), lib
    return lib


def built(variable, what):
    """The path of a build output named by `variable`; fails (never skips) when it is missing."""
    path = os.environ.get(variable)
    assert path, f"{variable} must name {what} (scripts/test.sh sets it)"
    assert Path(path).is_file(), path
    return path


@pytest.fixture(scope="session")
def binary():
    return built("EMBEDFN_BIN", "the built embedfn binary")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running embedfn process on a free loopback port."""

    def __init__(self, binary, ort_lib, env, args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        full.update({"HOST": "127.0.0.1", "PORT": str(self.port), "ORT_DYLIB_PATH": ort_lib,
                     "ORT_INTRA_THREADS": "1", "USE_CUDA": "false", "HF_HUB_OFFLINE": "1",
                     # Each run starts with an empty optimized-model cache (tests that check the
                     # cache pass their own): nothing from an earlier run or build can leak in.
                     "ORT_CACHE_DIR": ORT_CACHE})
        full.update(env)
        args = [a.replace("{port}", str(self.port)) for a in args]  # for CLIs that take --addr
        self.proc = subprocess.Popen([binary, *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.time() + 180  # a cold embedfn-host compiles the component first
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedfn exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("embedfn did not become healthy within 180 s")

    def post(self, path, body=None, **kw):
        return requests.post(self.url + path, json=body, timeout=60, **kw)

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=60, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def host_binary():
    return built("EMBEDFN_HOST_BIN", "the built embedfn-host binary")


@pytest.fixture(scope="session")
def component():
    return built("EMBEDFN_COMPONENT", "the built embedfn-spin component")


@pytest.fixture(scope="session")
def start(binary, ort_lib):
    servers = []

    def _start(_binary=binary, _args=(), **env):
        server = Server(_binary, ort_lib, env, _args)
        servers.append(server)
        return server

    yield _start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def start_host(start, host_binary, component):
    """Starts embedfn-host serving the component (pre-initialised) with `graphs` {name: dir}."""

    def _start(graphs, *args, **env):
        graph_args = [a for name, d in graphs.items() for a in ("--graph", f"{name}={d}")]
        return start(host_binary, [component, "--snapshot", *graph_args, *args], **env)

    return _start


@pytest.fixture(scope="session")
def minilm(start, models_dir):
    return start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none")


@pytest.fixture(scope="session")
def jina(start, models_dir):
    return start(EMBEDDINGS_MODEL_ID=str(models_dir / "jina-embed-tiny"),
                 RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"))


def pytest_terminal_summary(terminalreporter):
    """Reports the largest difference from the reference that each golden test saw, and the
    figures other tests measured."""
    if reports.LINES:
        terminalreporter.section("measured")
        for line in reports.LINES:
            terminalreporter.write_line(line)
    if parity.LARGEST:
        terminalreporter.section("max |embedfn - reference| per test")
        for test, diff in sorted(parity.LARGEST.items()):
            terminalreporter.write_line(f"{diff:9.2e}  {test}")
