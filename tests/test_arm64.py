"""The aarch64 `embedfn` (AWS Lambda arm64, Graviton), cross-built by `scripts/build-arm64.sh`,
run under `qemu-aarch64` on the arm64 Lambda layers that `scripts/lambda-layers.sh arm64` builds
(the aarch64 `libonnxruntime` from the onnxruntime wheel, the test models): a small version of
the native end-to-end checks (emulation is slow), each answer compared with the
x86-64 binary's on the same request (within 1e-5) and with the independent reference; plus the
glibc floor of both binaries and libraries against Lambda's `provided.al2023` (glibc 2.34).

The emulated CPU is a Neoverse N1 (Graviton2, what Lambda arm64 runs on) unless
`EMBEDFN_QEMU_CPU` names another (`qemu-aarch64 -cpu help`; the binary is built for a Neoverse
N1, so older cores stop on an illegal instruction). A missing aarch64 binary, layer, qemu or
aarch64 glibc fails the tests.
"""

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import reports
from conftest import built
from lambda_runtime_api import RuntimeApi, start_function
from parity import close
from reference import Model
from test_errors import CASES, LONG
from test_lambda import fixture, http_body
from test_wasm import raw_exchange

#: `provided.al2023`'s glibc
LAMBDA_GLIBC = (2, 34)
CPU = os.environ.get("EMBEDFN_QEMU_CPU", "neoverse-n1")
TEXTS = ["Hello world", "你好，世界！这是一个测试。", "Ünïcödé, émojis 🎉 and    spaces", "word " * 700]
#: MiniLM's int8 kernels run ~50x slower per token under qemu than the fp32 fixtures (see
#: docs/testing.md): short texts only
MINILM_TEXTS = ["Hello world", "Ünïcödé 🎉"]
DOCS = ["The cat sat on the mat.", "Dogs are loyal animals.", "A very long document about cats. " * 120, ""]
EM_AARCH64 = 183  # ELF e_machine
#: aarch64 vs x86-64 on a float16 graph (see test_fp16_output_conversion)
FP16_TOL = 1e-2


def elf_machine(path):
    head = Path(path).read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


def versus_x86(what, arm, x86, tol=1e-5):
    """Asserts the aarch64 answer is within `tol` of the x86-64 one; records the difference."""
    diff = close(arm, x86, tol)
    reports.LINES.append(f"aarch64 (qemu -cpu {CPU}) vs x86-64, {what}: max |diff| {diff:.2e}")


# --- the aarch64 build, its library and qemu ---------------------------------------------------

@pytest.fixture(scope="module")
def arm64_binary():
    path = built("EMBEDFN_ARM64_BIN", "the aarch64 embedfn (scripts/build-arm64.sh)")
    assert elf_machine(path) == EM_AARCH64, f"{path} is not an aarch64 binary"
    return path


@pytest.fixture(scope="module")
def arm64_layers():
    """The arm64 Lambda layers, as `scripts/lambda-layers.sh arm64` builds them for deployment."""
    path = os.environ.get("EMBEDFN_ARM64_LAYERS")
    assert path, "EMBEDFN_ARM64_LAYERS must name the arm64 Lambda layers (scripts/test.sh builds them)"
    return Path(path)


@pytest.fixture(scope="module")
def arm64_ort(arm64_layers):
    libs = sorted((arm64_layers / "onnxruntime-layer" / "lib").glob("libonnxruntime.so.*"))
    assert len(libs) == 1, f"one libonnxruntime in the arm64 layer, found {libs}"
    assert elf_machine(libs[0]) == EM_AARCH64, f"{libs[0]} is not an aarch64 library"
    return str(libs[0])


#: /proc/cpuinfo of a Graviton2 (Neoverse N1) core; {n} is the processor number
N1_CPUINFO = """processor\t: {n}
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


def cpu_numbers():
    """The CPUs the kernel lists as possible (`0-1`, `0-3,6`), as ONNX Runtime's cpuinfo reads them."""
    spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
    numbers = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        numbers += range(int(first), int(last or first) + 1)
    return numbers


@pytest.fixture(scope="module")
def emulated(arm64_binary, tmp_path_factory):
    """An executable that runs the aarch64 binary under qemu (for Server and start_function,
    which take one path).

    qemu-user looks up every absolute path under its -L prefix first. The prefix here holds
    Debian's aarch64 glibc (`lib/`) and an aarch64 `/proc/cpuinfo`: qemu 7.2 passes the host's
    x86 one through, and ONNX Runtime's cpuinfo dereferences NULL on it (SIGSEGV when the
    library loads). On a real Graviton the kernel's own file is there."""
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    assert qemu, "qemu-aarch64 not found (scripts/build-arm64.sh installs qemu-user)"
    glibc = Path("/usr/aarch64-linux-gnu/lib")
    assert (glibc / "ld-linux-aarch64.so.1").is_file(), f"no aarch64 glibc in {glibc} (libc6-arm64-cross)"
    root = tmp_path_factory.mktemp("arm64")
    sysroot = root / "sysroot"
    (sysroot / "proc").mkdir(parents=True)
    (sysroot / "lib").symlink_to(glibc)
    (sysroot / "proc" / "cpuinfo").write_text("".join(N1_CPUINFO.format(n=n) for n in cpu_numbers()))
    wrapper = root / "embedfn-aarch64"
    wrapper.write_text(f'#!/bin/sh\nexec "{qemu}" -cpu {CPU} -L "{sysroot}" "{arm64_binary}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="module")
def arm_jina(start, emulated, arm64_ort, models_dir):
    began = time.perf_counter()
    server = start(emulated, EMBEDDINGS_MODEL_ID=str(models_dir / "jina-embed-tiny"),
                   RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"), ORT_DYLIB_PATH=arm64_ort)
    reports.LINES.append(f"aarch64 under qemu: exec -> healthy, Jina-shaped fixtures: "
                         f"{time.perf_counter() - began:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def arm_minilm(start, emulated, arm64_ort, models_dir):
    server = start(emulated, EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"), RERANKER_MODEL_ID="none",
                   ORT_DYLIB_PATH=arm64_ort)
    yield server
    server.stop()


# --- the glibc floor -----------------------------------------------------------------------------

def glibc_needed(path):
    """The newest GLIBC_x.y symbol version an ELF file needs (its .gnu.version_r entries)."""
    out = subprocess.run(["readelf", "--version-info", "--wide", path], check=True, capture_output=True,
                         text=True).stdout
    versions = {tuple(int(x) for x in m) for m in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", out)}
    assert versions, f"no GLIBC_ versions needed by {path}?"
    return max(versions)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_glibc_floor_fits_provided_al2023(arch, request):
    if arch == "x86_64":
        files = {"embedfn": request.getfixturevalue("binary"), "libonnxruntime": request.getfixturevalue("ort_lib")}
    else:
        files = {"embedfn": request.getfixturevalue("arm64_binary"),
                 "libonnxruntime": request.getfixturevalue("arm64_ort")}
    for name, path in files.items():
        need = glibc_needed(path)
        reports.LINES.append(f"{arch} {name} needs glibc {need[0]}.{need[1]}")
        assert need <= LAMBDA_GLIBC, f"{path} needs glibc {need}, provided.al2023 has {LAMBDA_GLIBC}"


# --- the HTTP server under qemu against the x86-64 one ------------------------------------------

def embeddings(server, path, body):
    r = server.post(path, body)
    assert r.status_code == 200, r.text
    if path == "/api/embed":
        return r.json()["embeddings"]
    data = r.json()["data"]
    if body.get("encoding_format") == "base64":
        return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
    return [d["embedding"] for d in data]


def test_minilm_token_ids_and_vectors(arm_minilm, minilm, models_dir):
    tokens = {"input": TEXTS}
    assert arm_minilm.post("/tokenize", tokens).json() == minilm.post("/tokenize", tokens).json()
    ref = Model(models_dir / "minilm")
    for path, extra in [("/api/embed", {}), ("/v1/embeddings", {"encoding_format": "float"}),
                        ("/v1/embeddings", {"encoding_format": "base64"})]:
        body = {"model": "minilm", "input": MINILM_TEXTS, **extra}
        arm, x86 = embeddings(arm_minilm, path, body), embeddings(minilm, path, body)
        versus_x86(f"MiniLM int8 {path} {extra.get('encoding_format', '')}".rstrip(), arm, x86)
        for v, text in zip(arm, MINILM_TEXTS, strict=True):
            close(v, ref.embed(text))


def test_jina_token_ids_and_vectors_with_tasks(arm_jina, jina, models_dir):
    tokens = {"input": TEXTS, "task": "retrieval.query"}
    assert arm_jina.post("/tokenize", tokens).json() == jina.post("/tokenize", tokens).json()
    ref = Model(models_dir / "jina-embed-tiny")
    for path, body in [
        ("/api/embed", {"model": "jina-embed-tiny-query", "input": TEXTS}),
        ("/v1/embeddings", {"input": TEXTS, "task": "retrieval.passage", "dimensions": 16}),
        ("/v1/embeddings", {"input": TEXTS, "task": "classification", "encoding_format": "base64"}),
    ]:
        arm, x86 = embeddings(arm_jina, path, body), embeddings(jina, path, body)
        versus_x86(f"Jina-shaped {path} {body.get('task', 'retrieval.query')}", arm, x86)
        task = body.get("task", "retrieval.query")
        for v, text in zip(arm, TEXTS, strict=True):
            close(v, ref.embed(text, task=task, dims=body.get("dimensions")))


def test_jina_rerank(arm_jina, jina, models_dir):
    body = {"model": "jina-rerank-tiny", "query": "Where is the cat?", "documents": DOCS}
    arm, x86 = arm_jina.post("/api/rerank", body), jina.post("/api/rerank", body)
    assert arm.status_code == 200, arm.text
    arm, x86 = arm.json()["results"], x86.json()["results"]
    assert [r["index"] for r in arm] == [r["index"] for r in x86]
    versus_x86("Jina-shaped rerank /api/rerank", [r["relevance_score"] for r in arm],
               [r["relevance_score"] for r in x86])
    expected = Model(models_dir / "jina-rerank-tiny").rerank_scores(body["query"], DOCS)
    close([r["relevance_score"] for r in arm], [expected[r["index"]] for r in arm])


def test_fp16_output_conversion(start, emulated, arm64_ort, binary, models_dir):
    env = {"EMBEDDINGS_MODEL_ID": str(models_dir / "jina-embed-tiny"), "RERANKER_MODEL_ID": "none",
           "ONNX_QUANTIZATION": "fp16"}
    arm_server, x86_server = start(emulated, ORT_DYLIB_PATH=arm64_ort, **env), start(binary, **env)
    body = {"input": TEXTS, "options": {"task": "separation"}}
    try:
        arm, x86 = embeddings(arm_server, "/api/embed", body), embeddings(x86_server, "/api/embed", body)
    finally:
        arm_server.stop()
        x86_server.stop()
    # A float16 graph is not computed alike: ONNX Runtime on aarch64 (FEAT_FP16) runs its ops in
    # float16, on x86-64 it casts them to float32. The vectors agree to float16 precision, the
    # tolerance the fixture generator checks the fp16 graph against the fp32 one with.
    versus_x86("Jina-shaped fp16 graph (float16 output) /api/embed", arm, x86, tol=FP16_TOL)
    ref = Model(models_dir / "jina-embed-tiny", "model_fp16.onnx")
    for a, v, text in zip(arm, x86, TEXTS, strict=True):
        close(a, ref.embed(text, task="separation"), FP16_TOL)
        close(v, ref.embed(text, task="separation"))


#: a few of the native bad-input table: malformed JSON, a wrong type, an unknown model, an
#: over-long input with truncate false (both APIs), a wrong rerank shape
BAD = CASES[:1] + [c for c in CASES if c[2] in (
    {"input": 5}, {"input": "x", "model": "nope"}, {"input": LONG, "truncate": False},
    {"query": "q", "documents": "d"})]


@pytest.mark.parametrize("method, path, body, status, fragment", BAD, ids=lambda x: str(x)[:30])
def test_bad_inputs_answer_as_on_x86(arm_jina, jina, method, path, body, status, fragment):
    arm, x86 = raw_exchange(arm_jina, method, path, body), raw_exchange(jina, method, path, body)
    assert arm == x86
    assert arm[0] == status and fragment in arm[1]
    assert arm_jina.get("/health").status_code == 200


# --- the Lambda Runtime API path under qemu -----------------------------------------------------

def test_lambda_runtime_api_events(emulated, arm64_ort, arm64_layers, binary, ort_lib, models_dir):
    """The function as the arm64 zip deploys it: its library and models from the layers."""
    layer_models = arm64_layers / "models-layer" / "models"
    events = [fixture("apigw-v1"), fixture("function-url"), fixture("direct"),
              {**fixture("apigw-v1"), "body": '{"model": "minilm", "input": 42}'}]
    answers = {}
    for arch, exe, lib, models in [("aarch64", emulated, arm64_ort, layer_models),
                                   ("x86_64", binary, ort_lib, models_dir)]:
        api = RuntimeApi()
        try:
            began = time.perf_counter()
            proc = start_function(exe, api, {"ORT_DYLIB_PATH": lib, "ORT_INTRA_THREADS": "1",
                                             "EMBEDDINGS_MODEL_ID": str(models / "minilm"),
                                             "RERANKER_MODEL_ID": str(models / "jina-rerank-tiny")})
            assert api.wait_ready(proc, timeout=180), f"{arch}: no poll: {proc.poll()} {api.init_errors}"
            if arch == "aarch64":
                reports.LINES.append(f"aarch64 under qemu: Lambda init (exec -> first poll), MiniLM + "
                                     f"reranker: {api.first_poll - began:.1f} s")
            answers[arch] = [api.invoke(e) for e in events]
            assert proc.poll() is None
            proc.terminate()
            proc.wait(10)
        finally:
            api.close()
    arm, x86 = answers["aarch64"], answers["x86_64"]
    assert [kind for kind, _ in arm] == ["response"] * len(events)
    assert [a.get("statusCode") for _, a in arm] == [200, 200, None, 400]
    ref = Model(models_dir / "minilm")
    v1 = http_body(arm[0][1])["embeddings"]
    versus_x86("Lambda API Gateway event, MiniLM", v1, http_body(x86[0][1])["embeddings"])
    for v, text in zip(v1, ["Hello world", "Lambda says hi"], strict=True):
        close(v, ref.embed(text))
    scores = [[r["relevance_score"] for r in http_body(a[1][1])["results"]] for a in (arm, x86)]
    assert [r["index"] for r in http_body(arm[1][1])["results"]] == \
        [r["index"] for r in http_body(x86[1][1])["results"]]
    versus_x86("Lambda Function URL rerank", *scores)
    versus_x86("Lambda direct invocation", arm[2][1]["embeddings"], x86[2][1]["embeddings"])
    assert http_body(arm[3][1]) == http_body(x86[3][1])
