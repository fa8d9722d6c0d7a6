"""The benchmark's scale section: the full-size models (scripts/make-scale-models.sh) per
variant, at long inputs, against the floor (Python ORT `session.run` on the same file and ids)
and the seed-style Python server on the same file.

Per model × variant: embedfn's cold start (exec → first answer) with an empty ONNX Runtime
optimized-model cache and again with it filled, then per input length one text (or one
query-document pair) per request, sequentially: texts/s, tokens/s, p50/p99 latency, and the
process's peak RSS after each length (VmHWM: lengths run in increasing order, so it is the peak
up to that length). Contenders run one after the other (never two big models in memory at
once). embedfn's first answer at each length is compared with the floor's (max |diff| is
recorded; above 1e-4 the row is marked).

Variants: fp32 (`model.onnx`, with ONNX_FUSED_ATTENTION=false), fp32-fused (`model.fused.onnx`,
scripts/fuse_attention.py), fp16, int8, uint8, quantized, q4, bnb4 (ONNX_QUANTIZATION).
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import contenders
from contenders import FloorWorker, HttpServer, embedfn_env, server_env
from onnx_run import pool, pad, sigmoid
from system import cpu_model, physical_cores
from textmodel import TextModel

MODELS = ["jina-v3-scale", "jina-reranker-scale"]
VARIANTS = ["fp32", "fp32-fused", "fp16", "int8", "uint8", "quantized", "q4", "bnb4"]
LENGTHS = [128, 512, 2048, 8192]
REQUESTS = {128: 8, 512: 4, 2048: 2, 8192: 1}
QUERY = "where is the cat"
#: How long one scale request may take (server and client): 32K tokens on 2 cores take minutes.
LONG_CALL_S = 3600
EMBEDFN, FLOOR, SEED = "embedfn", "floor (ORT session.run)", "seed-style Python"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--ort-lib", required=True)
    p.add_argument("--models", required=True, type=Path, help="directory holding the scale models")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("EMBEDFN_CACHE", Path.home() / ".cache/embedfn")) / "bench")
    p.add_argument("--scale-models", default=" ".join(MODELS))
    p.add_argument("--scale-variants", default=" ".join(VARIANTS))
    p.add_argument("--scale-lengths", default=" ".join(map(str, LENGTHS)))
    p.add_argument("--scale-contenders", default=f"{EMBEDFN},{FLOOR},{SEED}",
                   help="comma-separated subset of: embedfn, floor (ORT session.run), seed-style Python")
    p.add_argument("--requests", type=int, default=0, help="requests per length (default: 8/4/2/1 at 128/512/2048/8192)")
    p.add_argument("--cuda", action="store_true", help="USE_CUDA=true for embedfn, CUDA provider for the Python contenders")
    p.add_argument("--batch", type=int, default=1, help="texts per request (embedders; with --cuda, try 8-32)")
    p.add_argument("--max-batch-size", type=int, help="embedfn's MAX_BATCH_SIZE (default: its own)")
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--one-start", action="store_true",
                   help="start embedfn once per variant, keeping the optimized-model cache of earlier runs "
                        "(no cold-start figures; for long-input runs after a run that measured them)")
    return p.parse_args(argv)


def file_of(variant):
    if variant == "fp32":
        return "model.onnx"
    if variant == "fp32-fused":
        return "model.fused.onnx"
    return f"model_{variant}.onnx"


def text_of(model, n):
    """A text of exactly `n` tokens as the model runs it (specials included), or a
    (query, document) pair of `n` tokens for a cross-encoder: as many words as fit, then
    one-token words to make up the rest (tokenizers differ in tokens per word)."""
    words = "the cat sat on mat dog house tree water light".split()

    def doc(k, tail=0):
        return " ".join([words[i % len(words)] for i in range(k)] + ["a"] * tail)

    def length(text):
        try:
            return len(model.pair(QUERY, text)) if model.cross_encoder else len(model.encode(text))
        except ValueError:  # a document longer than one window
            return n + 1

    lo, hi = 0, n
    while lo < hi:  # the most words that fit
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if length(doc(mid)) <= n else (lo, mid - 1)
    # Make up the rest with one-token words, dropping words until they fit exactly.
    for k in range(lo, max(lo - 8, -1), -1):
        for tail in range(n - length(doc(k)) + 1):
            if length(doc(k, tail)) >= n:
                break
        text = doc(k, tail)
        if length(text) == n:
            break
    assert length(text) == n, (length(text), n)
    return text


def body_of(model, text, batch):
    if model.cross_encoder:
        return "/api/rerank", {"query": QUERY, "documents": [text]}
    return "/api/embed", {"input": [text] * batch}


def answer_of(model, raw):
    a = json.loads(raw)
    if model.cross_encoder:
        return np.array([r["relevance_score"] for r in a["results"]])
    return np.asarray(a["embeddings"], dtype=np.float64)


def probe(model):
    path, body = body_of(model, "cold start", 1)
    return path, json.dumps(body).encode()


def log(msg):
    print(f"[bench --scale] {msg}", file=sys.stderr, flush=True)


def run_http(proc, model, lengths, texts, args):
    out, first = {}, {}
    for n in lengths:
        path, body = body_of(model, texts[n], args.batch)
        raw = json.dumps(body).encode()
        lat = []
        for _ in range(args.requests or REQUESTS[n]):
            seconds, status, answer = proc.call(path, raw)
            if status != 200:
                raise RuntimeError(f"{proc.name} at {n} tokens: {status}: {answer[:300]!r}")
            # A server that cut the text (to fit its memory budget) ran fewer tokens than timed.
            served = json.loads(answer).get("prompt_eval_count") if not model.cross_encoder else None
            if served is not None and served != n * args.batch:
                raise RuntimeError(f"{proc.name} at {n} tokens: it ran {served} tokens, not {n * args.batch}")
            lat.append(seconds)
            first.setdefault(n, answer_of(model, answer))
        out[n] = stats(lat, n, args.batch)
        out[n]["peak_rss_mib"] = proc.peak_rss_kib() / 1024
        log(f"  {proc.name} {n} tokens: p50 {out[n]['p50_ms']:.0f} ms, peak RSS {out[n]['peak_rss_mib']:.0f} MiB")
    return out, first


def stats(lat, n, batch):
    lat = np.asarray(lat)
    texts_s = batch * len(lat) / lat.sum()
    return {"requests": len(lat), "p50_ms": float(np.percentile(lat, 50) * 1000),
            "p99_ms": float(np.percentile(lat, 99) * 1000), "texts_per_s": float(texts_s),
            "tokens_per_s": float(texts_s * n)}


def bench_variant(args, model, variant, lengths, logs):
    onnx = model.dir / "onnx" / file_of(variant)
    if not onnx.is_file():
        log(f"{model.name} {variant}: {onnx.name} missing, skipped")
        return None
    texts = {n: text_of(model, n) for n in lengths}
    row = {"file": onnx.name, "file_mib": sum(p.stat().st_size for p in onnx.parent.glob(onnx.name + "*")) / 2**20,
           "contenders": {}}
    if variant in ("fp32", "fp32-fused"):  # model.onnx_data is shared with model.fused.onnx
        row["file_mib"] = sum(p.stat().st_size for p in onnx.parent.glob("model.onnx*")) / 2**20
    wanted = args.scale_contenders.split(",")
    first = {}
    if EMBEDFN in wanted:
        cache = args.out / "ort-cache" / variant
        if not args.one_start:
            shutil.rmtree(cache, ignore_errors=True)
        quant = {"fp32": "none", "fp32-fused": "none"}.get(variant, variant)
        extra = {"ONNX_QUANTIZATION": quant, "ORT_CACHE_DIR": str(cache),
                 "ONNX_FUSED_ATTENTION": "true" if variant == "fp32-fused" else "false",
                 "USE_CUDA": "true" if args.cuda else "false",
                 # A 32K-token pass on 2 cores runs for many minutes: past the default 120 s.
                 "REQUEST_TIMEOUT_MS": str(LONG_CALL_S * 1000)}
        if args.max_batch_size:
            extra["MAX_BATCH_SIZE"] = str(args.max_batch_size)
        env = embedfn_env(args.ort_lib, model, extra)
        colds = []
        # --one-start with a filled cache: one (cached) start; otherwise fill it first, so that the
        # serving process's RSS is never that of the optimizing start.
        cached = any(cache.glob("*/.complete"))
        for attempt in ("cold", "cold, cached optimized model")[1 if args.one_start and cached else 0:]:
            proc = HttpServer(f"embedfn {model.name} {variant}", logs / f"embedfn-{model.name}-{variant}.log",
                              [args.binary], server_env(env), probe(model))
            colds.append(proc.cold_start_s)
            log(f"{model.name} {variant}: embedfn {attempt} start {proc.cold_start_s:.1f} s, "
                f"RSS {proc.peak_rss_kib() / 1024:.0f} MiB")
            idle = proc.peak_rss_kib() / 1024
            if attempt == "cold":
                proc.stop()
        try:
            results, first = run_http(proc, model, lengths, texts, args)
        finally:
            proc.stop()
        row["contenders"][EMBEDFN] = {"cold_start_s": colds[0] if len(colds) == 2 else None,
                                      "cold_start_cached_s": colds[-1], "peak_rss_after_start_mib": idle,
                                      "lengths": results}
    if FLOOR in wanted:
        seqs = {n: ([model.pair(QUERY, texts[n])] if model.cross_encoder else [model.encode(texts[n])] * args.batch)
                for n in lengths}
        batches = {str(n): [pad(seqs[n], model.pad_id)] * (args.requests or REQUESTS[n]) for n in lengths}
        spec = SimpleNamespace(onnx_path=str(onnx), task_id=model.task_id)
        contenders.FLOOR_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.cuda else None
        w = FloorWorker(f"floor {model.name} {variant}", logs / f"floor-{model.name}-{variant}.log", spec,
                        args.threads, batches)
        res = {}
        for n in lengths:
            lat, out = w.run(str(n))
            res[n] = stats(lat, n, args.batch)
            res[n]["peak_rss_mib"] = w.peak_rss_kib() / 1024
            ref = sigmoid(out) if model.cross_encoder else pool(out, batches[str(n)][0][1], model.pooling)
            if n in first:
                res[n]["embedfn_max_abs_diff"] = float(np.max(np.abs(first[n] - ref)))
            log(f"  floor {n} tokens: p50 {res[n]['p50_ms']:.0f} ms, diff to embedfn "
                f"{res[n].get('embedfn_max_abs_diff', float('nan')):.2e}")
        w.stop()
        row["contenders"][FLOOR] = {"session_s": w.cold_start_s, "lengths": res}
    if SEED in wanted:
        env = server_env({})
        argv = [sys.executable, str(Path(__file__).with_name("python_servers.py")), "--mode", "seed",
                "--model", str(model.dir), "--onnx", onnx.name, "--port", env["PORT"]]
        if args.cuda:
            argv.append("--cuda")
        proc = HttpServer(f"seed {model.name} {variant}", logs / f"seed-{model.name}-{variant}.log", argv, env,
                          probe(model))
        cold = proc.cold_start_s
        try:
            results, _ = run_http(proc, model, lengths, texts, args)
        finally:
            proc.stop()
        row["contenders"][SEED] = {"cold_start_s": cold, "lengths": results}
    return row


def table(doc):
    lines = []
    for mname, variants in doc["models"].items():
        lines.append(f"\n## {mname}\n")
        lines.append("| variant | file MiB | cold start s (cached) | length | embedfn p50 ms | p99 ms | tokens/s | "
                     "peak RSS MiB | floor p50 ms | embedfn/floor | seed p50 ms | seed/embedfn | diff vs floor |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v, row in variants.items():
            if row is None:
                continue
            c = row["contenders"]
            e, f, s = c.get(EMBEDFN, {}), c.get(FLOOR, {}), c.get(SEED, {})
            lengths = sorted({int(n) for x in (e, f, s) for n in x.get("lengths", {})})
            for i, n in enumerate(lengths):
                el, fl, sl = (x.get("lengths", {}).get(n) or x.get("lengths", {}).get(str(n)) for x in (e, f, s))
                cold = (f"{e['cold_start_s'] or float('nan'):.1f} ({e['cold_start_cached_s']:.1f})"
                        if e and i == 0 else "")

                def g(x, k, fmt="{:.0f}"):
                    return fmt.format(x[k]) if x and k in x else "–"

                ratio = f"{el['p50_ms'] / fl['p50_ms']:.2f}" if el and fl else "–"
                seed_ratio = f"{sl['p50_ms'] / el['p50_ms']:.2f}" if el and sl else "–"
                lines.append(f"| {v if i == 0 else ''} | {row['file_mib']:.0f} | {cold} | {n} | {g(el, 'p50_ms')} | "
                             f"{g(el, 'p99_ms')} | {g(el, 'tokens_per_s')} | {g(el, 'peak_rss_mib')} | {g(fl, 'p50_ms')} | "
                             f"{ratio} | {g(sl, 'p50_ms')} | {seed_ratio} | {g(fl, 'embedfn_max_abs_diff', '{:.1e}')} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    contenders.START_TIMEOUT_S = 900  # a 2.3 GB model's first start optimizes and caches it
    contenders.CALL_TIMEOUT_S = LONG_CALL_S
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "scale-logs"
    logs.mkdir(exist_ok=True)
    started = time.perf_counter()
    doc = {"machine": {"cpu": cpu_model(), "physical_cores": physical_cores(), "threads": args.threads},
           "cuda": args.cuda, "batch": args.batch, "max_batch_size": args.max_batch_size, "models": {}}
    for mname in args.scale_models.split():
        model = TextModel(args.models / mname)
        lengths = [n for n in map(int, args.scale_lengths.split()) if n <= model.max_length]
        doc["models"][mname] = {}
        for v in args.scale_variants.split():
            log(f"{mname} {v}: lengths {lengths}")
            doc["models"][mname][v] = bench_variant(args, model, v, lengths, logs)
            (args.out / "bench-scale.json").write_text(json.dumps(doc, indent=1))
    doc["seconds"] = time.perf_counter() - started
    (args.out / "bench-scale.json").write_text(json.dumps(doc, indent=1))
    print(table(doc))
    log(f"wrote {args.out / 'bench-scale.json'} in {doc['seconds']:.0f} s")


if __name__ == "__main__":
    main()
