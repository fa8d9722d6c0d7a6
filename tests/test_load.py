"""Load: 32 concurrent clients for LOAD_SECONDS (default 60) against the server on loopback.
Every request must succeed and the server's RSS must not grow by more than 5 % after warm-up.
Latency percentiles are reported, not asserted (see the benchmark command for speed)."""

import os
import statistics
import threading
import time

import requests

import reports

CLIENTS = 32
SECONDS = float(os.environ.get("LOAD_SECONDS", "60"))
WARMUP = min(10.0, SECONDS / 6)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_32_clients_for_a_minute(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"),
                   RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"))
    bodies = [
        ("/api/embed", {"input": "a single sentence to embed"}),
        ("/api/embed", {"input": [f"text {i} of a small batch" for i in range(8)]}),
        ("/v1/embeddings", {"input": "OpenAI-style request", "encoding_format": "base64"}),
        ("/v1/rerank", {"query": "what is rust?", "documents": ["a language", "a fungus", "iron oxide"]}),
    ]
    latencies, failures = [], []
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def client(n):
        session = requests.Session()
        i = n
        while time.monotonic() < stop:
            path, body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = session.post(server.url + path, json=body, timeout=60)
                ok = r.status_code == 200
                detail = f"{path}: {r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                ok, detail = False, f"{path}: {e}"
            took = time.perf_counter() - t0
            with lock:
                (latencies.append(took) if ok else failures.append(detail))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(WARMUP)
    rss_after_warmup = rss_kib(server.proc.pid)
    for t in threads:
        t.join()
    rss_end = rss_kib(server.proc.pid)

    assert not failures, f"{len(failures)} failed requests, first: {failures[:3]}"
    growth = rss_end / rss_after_warmup - 1
    q = statistics.quantiles(latencies, n=100)
    reports.LINES.append(
        f"load: {CLIENTS} clients x {SECONDS:.0f} s: {len(latencies)} requests, 0 errors, "
        f"{len(latencies) / SECONDS:.0f} req/s, p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
        f"RSS {rss_after_warmup / 1024:.0f} -> {rss_end / 1024:.0f} MiB ({growth:+.1%})")
    assert growth <= 0.05, f"RSS grew {growth:.1%} under load ({rss_after_warmup} -> {rss_end} KiB)"
    assert server.get("/health").status_code == 200
