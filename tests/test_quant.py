"""Every quantization file the seeds name, the attention-fused file and the optimized-model
cache, on the small real-architecture fixtures (2-layer XLM-R encoders: attention, RoPE, LoRA).

For each `ONNX_QUANTIZATION` variant the real `embedfn` binary loads the file and must answer
within 1e-4 of Python ONNX Runtime on the *same* file (texts sent one per request: dynamic int8
graphs quantize activations per tensor, so their vectors depend on batch company), and within a
stated distance of the fp32 model. The bounds were measured on these fixtures (worst case over
the texts and tasks below) and carry margin:

| variant                  | measured min cosine to fp32 | bound  | measured max rerank score diff | bound |
|--------------------------|-----------------------------|--------|--------------------------------|-------|
| fp16                     | 0.99999941                  | 0.9999 | 2.5e-4                         | 2e-3  |
| int8 / uint8 / quantized | 0.99954 / 0.99968 / 0.99954 | 0.998  | 3.1e-3 / 3.9e-3 / 5.5e-3       | 0.03  |
| q4 / bnb4                | 0.9811 / 0.9741             | 0.95   | 0.018 / 0.060                  | 0.15  |

The int8 figure is CPU dependent. `model_int8.onnx` multiplies u8 activations by s8 weights
(per tensor, no `reduce_range`, as the published int8 files do). With VNNI (AVX512-VNNI,
AVX-VNNI) or on arm64 (SDOT/UDOT) ONNX Runtime's kernels sum exactly; on x86-64 CPUs without
VNNI (AVX2 only, e.g. AMD Zen 3) they use `vpmaddubsw`, whose int16 pair sums saturate, and the
same file measured 0.9973 (embedfn still equal to Python ONNX Runtime there). The bound below
follows the CPU; uint8 and `quantized` (7-bit weights) do not saturate.
"""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from parity import close
from reference import Model, onnx_parameters

TEXTS = ["Hello world", "the cat sat on the mat", "你好世界 这是一个测试",
         "where is berlin, the capital of germany?", "word " * 200]
TASKS = ["retrieval.query", "text-matching"]
DOCS = ["The cat sat on the mat.", "Dogs are loyal animals.", "你好世界", "berlin " * 150]
QUERY = "where is the cat"


def exact_u8s8() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels sum exactly here (VNNI on x86-64, or arm64)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni"))


MIN_COSINE = {"fp16": 0.9999, "int8": 0.998 if exact_u8s8() else 0.995, "uint8": 0.998, "quantized": 0.998,
              "q4": 0.95, "bnb4": 0.95}
MAX_SCORE_DIFF = {"fp16": 2e-3, "int8": 0.03, "uint8": 0.03, "quantized": 0.03, "q4": 0.15, "bnb4": 0.15}
TOL = 1e-4


@pytest.fixture(scope="module")
def fp32(models_dir):
    return Model(models_dir / "jina-embed-tiny"), Model(models_dir / "jina-rerank-tiny")


def embed_one(server, text, task):
    r = server.post("/v1/embeddings", {"input": text, "task": task})
    assert r.status_code == 200, r.text
    return np.array(r.json()["data"][0]["embedding"])


def rerank(server, query, docs):
    r = server.post("/v1/rerank", {"query": query, "documents": docs})
    assert r.status_code == 200, r.text
    return [x["relevance_score"] for x in sorted(r.json()["results"], key=lambda x: x["index"])]


@pytest.mark.parametrize("variant", list(MIN_COSINE))
def test_variant_serves_like_python_ort_and_near_fp32(start, models_dir, fp32, variant):
    embed_dir, rerank_dir = models_dir / "jina-embed-tiny", models_dir / "jina-rerank-tiny"
    ref = Model(embed_dir, onnx_file=f"model_{variant}.onnx")
    rref = Model(rerank_dir, onnx_file=f"model_{variant}.onnx")
    server = start(EMBEDDINGS_MODEL_ID=str(embed_dir), RERANKER_MODEL_ID=str(rerank_dir),
                   ONNX_QUANTIZATION=variant)
    tags = server.get("/api/tags").json()["models"]
    assert all(m["size"] > 0 for m in tags)
    # The parameter count is the fp32 model's, plus the scales and zero points: 4-bit weights
    # packed two to a byte count as two.
    count = server.post("/api/show", {"model": "jina-embed-tiny"}).json()["model_info"]["general.parameter_count"]
    fp32_count = onnx_parameters(embed_dir / "onnx" / "model.onnx")
    assert fp32_count <= count <= 1.05 * fp32_count, (variant, count, fp32_count)
    for text in TEXTS:
        for task in TASKS:
            got = embed_one(server, text, task)
            close(got, ref.embed(text, task=task), tol=TOL)
            cosine = float(np.dot(got, fp32[0].embed(text, task=task)))
            assert cosine >= MIN_COSINE[variant], f"{variant}: cosine to fp32 {cosine:.6f}"
    for doc in DOCS:  # one document per request: batch company must not matter
        got = rerank(server, QUERY, [doc])
        close(got, rref.rerank_scores(QUERY, [doc]), tol=TOL)
        diff = abs(got[0] - fp32[1].rerank_scores(QUERY, [doc])[0])
        assert diff <= MAX_SCORE_DIFF[variant], f"{variant}: score {diff:.4f} from fp32"
    server.stop()


def fuse(model_dir):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "fuse_attention.py"), str(model_dir)], check=True,
                   capture_output=True)


def test_fused_attention_is_preferred_and_matches_unfused(start, models_dir, tmp_path, fp32):
    embed, rerank_dir = tmp_path / "jina-embed-tiny", tmp_path / "jina-rerank-tiny"
    shutil.copytree(models_dir / "jina-embed-tiny", embed)
    shutil.copytree(models_dir / "jina-rerank-tiny", rerank_dir)
    fuse(embed)
    fuse(rerank_dir)
    assert (embed / "onnx" / "model.fused.onnx").is_file() and (embed / "onnx" / "model_q4.fused.onnx").is_file()
    server = start(EMBEDDINGS_MODEL_ID=str(embed), RERANKER_MODEL_ID=str(rerank_dir))
    for text in TEXTS:
        close(embed_one(server, text, "retrieval.query"), fp32[0].embed(text, task="retrieval.query"), tol=TOL)
    # A padded batch takes the plain branch of the fused graph: same answers.
    r = server.post("/v1/embeddings", {"input": TEXTS, "task": "separation"}).json()
    for item, text in zip(r["data"], TEXTS):
        close(item["embedding"], fp32[0].embed(text, task="separation"), tol=TOL)
    close(rerank(server, QUERY, DOCS), fp32[1].rerank_scores(QUERY, DOCS), tol=TOL)
    server.stop()
    assert "attention-fused" in server.proc.stdout.read()


def test_second_start_uses_the_cached_optimized_model(start, models_dir, tmp_path, fp32):
    env = dict(EMBEDDINGS_MODEL_ID=str(models_dir / "jina-embed-tiny"), RERANKER_MODEL_ID="none",
               ORT_CACHE_DIR=str(tmp_path / "ort"))
    vectors, logs = [], []
    for _ in range(2):
        server = start(**env)
        vectors.append([embed_one(server, t, "text-matching") for t in TEXTS])
        server.stop()
        logs.append(server.proc.stdout.read())
    assert "optimized model cached" in logs[0] and "from the cache" not in logs[0]
    assert "from the cache (graph optimization skipped)" in logs[1]
    assert any((tmp_path / "ort").glob("*/model.onnx.data")), "optimized initializers go to external data"
    for a, b, text in zip(*vectors, TEXTS):
        close(a, b, tol=1e-6)
        close(b, fp32[0].embed(text, task="text-matching"), tol=TOL)
    # A cache directory that cannot be made (here: under a plain file) only costs a log line.
    (tmp_path / "file").write_text("")
    server = start(**{**env, "ORT_CACHE_DIR": str(tmp_path / "file" / "sub")})
    close(embed_one(server, "Hello world", "text-matching"), vectors[0][0], tol=1e-6)
    server.stop()
