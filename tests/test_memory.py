"""The memory budget holds: with a low MAX_MEMORY, a plain-attention encoder (2 x 256, 4 heads,
8192 positions: a 4,500-token input would need ~0.7 GiB of attention scores alone) and a
plain-attention cross-encoder in one process, long and concurrent inputs leave the process's
peak RSS (VmHWM) within the budget; an input that cannot fit is cut to what fits (truncate) or
refused with a 413 naming how many tokens fit; a flood beyond the bounded queue gets 503 with
Retry-After; and the process keeps serving the right vectors afterwards."""

import concurrent.futures
import os
import subprocess
import threading

import numpy as np
import pytest
from tokenizers import Tokenizer

import attention_model
import reports
from reference import Model

BUDGET_MIB = 640
WORDS = ("the of and to a in is it you that he was for on are with as his they be at one have this "
         "from or had by word but what some we can out other were all there when up").split()


def text_of(n_words, offset=0):
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n_words))


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


@pytest.fixture(scope="module")
def attention_models(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("attention")
    tok = models_dir / "jina-embed-tiny" / "tokenizer.json"
    emb = attention_model.write(root / "attention-embed", tok)
    rer = attention_model.write(root / "attention-rerank", tok, cross_encoder=True)
    return emb, rer


@pytest.fixture(scope="module")
def server(start, attention_models):
    emb, rer = attention_models
    return start(EMBEDDINGS_MODEL_ID=str(emb), RERANKER_MODEL_ID=str(rer), MAX_MEMORY=f"{BUDGET_MIB}M",
                 MAX_CONCURRENT_REQUESTS="2", MAX_QUEUE="2", MAX_QUEUE_WAIT_MS="60000")


@pytest.fixture(scope="module")
def reference(attention_models):
    return Model(attention_models[0])


def peak_within_budget(server, what):
    peak = vm_kib(server.proc.pid, "VmHWM")
    rss = vm_kib(server.proc.pid, "VmRSS")
    reports.LINES.append(f"peak RSS after {what}: {peak / 1024:.0f} MiB, now {rss / 1024:.0f} MiB (MAX_MEMORY {BUDGET_MIB} MiB)")
    assert peak <= BUDGET_MIB * 1024, f"VmHWM {peak} KiB > budget after {what}"


def test_long_input_is_cut_to_what_fits_or_refused_with_the_number(server, reference):
    text = text_of(4500)
    full = len(reference.ids(text))
    assert full == 4502
    # truncate (the default): cut to the longest length that fits, and the vector is the
    # reference's on exactly those tokens.
    r = server.post("/api/embed", {"input": text})
    assert r.status_code == 200, r.text
    fits = r.json()["prompt_eval_count"]
    assert 256 < fits < full
    cut = Tokenizer.from_str(reference.tok.to_str())
    cut.enable_truncation(fits)
    ids = cut.encode(text).ids
    assert len(ids) == fits
    want = reference.run(ids)[0].mean(axis=0)
    want /= np.linalg.norm(want)
    got = np.array(r.json()["embeddings"][0])
    assert np.abs(got - want).max() < 1e-4
    reports.LINES.append(f"under MAX_MEMORY={BUDGET_MIB}M the attention encoder runs at most {fits} tokens per pass")
    peak_within_budget(server, f"a {full}-token input cut to {fits}")

    # truncate false: a 413 in each API's own error shape, naming how many tokens fit.
    r = server.post("/api/embed", {"input": text, "truncate": False})
    assert r.status_code == 413, r.text
    assert f"at most {fits} tokens" in r.json()["error"]
    r = server.post("/v1/embeddings", {"input": [text], "truncate": False})
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert f"at most {fits} tokens" in err["message"] and err["code"] == "context_length_exceeded"
    # Within the budget, truncate false still runs.
    r = server.post("/api/embed", {"input": text_of(fits - 2), "truncate": False})
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] == fits


def test_concurrent_long_inputs_and_a_flood_stay_within_the_budget(server, reference):
    long_text = text_of(6000, 3)
    docs = [text_of(5000, 7), text_of(300, 1)]
    barrier = threading.Barrier(14)

    def call(i):
        barrier.wait()
        if i == 0:
            return server.post("/api/embed", {"input": long_text})
        if i == 1:
            return server.post("/v1/rerank", {"query": "where is the word", "documents": docs})
        return server.post("/api/embed", {"input": [text_of(1200, i), text_of(900, i + 1)]})

    with concurrent.futures.ThreadPoolExecutor(14) as pool:
        replies = list(pool.map(call, range(14)))
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 503}, statuses
    busy = [r for r in replies if r.status_code == 503]
    # At most 2 run and 2 wait: the other 10 are turned away at once, with Retry-After (a few
    # fewer if a slow thread arrives after the first requests finished).
    assert len(busy) >= 5 and statuses.count(200) >= 4, statuses
    for r in busy:
        assert int(r.headers["Retry-After"]) >= 1
        assert "at capacity" in r.text, r.text
    peak_within_budget(server, "concurrent long inputs and a flood")

    # The process keeps serving, with the right vectors.
    text = "the cat sat on the mat"
    r = server.post("/api/embed", {"input": text})
    assert r.status_code == 200, r.text
    want = reference.run(reference.ids(text))[0].mean(axis=0)
    want /= np.linalg.norm(want)
    assert np.abs(np.array(r.json()["embeddings"][0]) - want).max() < 1e-5
    # The rerank of a long document also ran in windows that fit.
    r = server.post("/v1/rerank", {"query": "where is the word", "documents": docs})
    assert r.status_code == 200, r.text
    peak_within_budget(server, "a long rerank")

    metrics = server.get("/metrics").text
    assert f"embedfn_memory_budget_bytes {BUDGET_MIB << 20}" in metrics
    assert "embedfn_memory_reserved_bytes 0" in metrics
    assert "embedfn_queue_depth 0" in metrics
    rejected = next(int(line.split()[1]) for line in metrics.splitlines()
                    if line.startswith("embedfn_requests_rejected_total "))
    assert rejected == len(busy)


def test_a_budget_below_the_loaded_models_fails_at_start(binary, ort_lib, attention_models):
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update({"EMBEDDINGS_MODEL_ID": str(attention_models[0]), "RERANKER_MODEL_ID": "none",
                "MAX_MEMORY": "16M", "ORT_DYLIB_PATH": ort_lib, "USE_CUDA": "false"})
    out = subprocess.run([binary, "--init-only"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "MAX_MEMORY" in out.stderr, out.stderr[-2000:]
