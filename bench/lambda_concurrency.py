"""Lambda Managed Instances: what one execution environment serves at N invocations in flight.

The real `embedfn` binary under the project's Runtime API emulator (tests/lambda_runtime_api.py),
with `AWS_LAMBDA_MAX_CONCURRENCY=N` (none for N = 1, as on-demand Lambda), is sent the same
single-text invocations N at a time; it reports invocations per second, p50 and p99 latency, the
forward passes the dynamic batcher ran (from `/metrics`) and the speed-up over N = 1. Run by
`scripts/bench.sh --lambda-concurrency`; writes `lambda-concurrency.json` to `--out`.
"""

import argparse
import concurrent.futures
import json
import re
import statistics
import sys
import time
from pathlib import Path

from contenders import LambdaFunction, binary_args, embedfn_env, function_url_event
from textmodel import TextModel
from workloads import sentences


def parse_args(argv=None):
    p = binary_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--models", type=Path, required=True, help="the test models' directory")
    p.add_argument("--model", default="minilm")
    p.add_argument("--invocations", type=int, default=96)
    p.add_argument("--concurrency", default="1 4 8", help="values of N")
    return p.parse_args(argv)


def passes(fn):
    """Forward passes so far, from the function's `/metrics` (a GET Function URL event)."""
    _, answer = fn.api.invoke(function_url_event("GET", "/metrics"))
    return int(re.search(r"^embedfn_batch_size_count (\d+)", answer["body"], re.M).group(1))


def run(args, model, n, texts):
    extra = {"AWS_LAMBDA_MAX_CONCURRENCY": str(n)} if n > 1 else {}
    probe = ("/api/embed", json.dumps({"input": ["warm-up"]}).encode())
    fn = LambdaFunction(f"lambda N={n}", args.out / f"lambda-concurrency-{n}.log", args.binary,
                        embedfn_env(args.ort_lib, model, extra), probe)
    try:
        before = passes(fn)

        def one(text):
            took, status, _ = fn.call("/api/embed", json.dumps({"input": [text]}).encode())
            if status != 200:
                raise RuntimeError(f"N={n}: status {status}")
            return took

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            latencies = sorted(pool.map(one, texts))
        wall = time.perf_counter() - t0
        return {"n": n, "invocations": len(texts), "wall_s": wall, "per_s": len(texts) / wall,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "passes": passes(fn) - before, "cold_start_s": fn.cold_start_s}
    finally:
        fn.stop()


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = TextModel(args.models / args.model)
    texts = sentences(args.invocations)
    rows = [run(args, model, int(n), texts) for n in args.concurrency.split()]
    base = rows[0]["per_s"]
    print(f"Lambda path, {args.model}, {args.invocations} single-text invocations, N in flight (emulator)")
    print("| N | invocations/s | × N=1 | p50 ms | p99 ms | forward passes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['per_s']:.1f} | {r['per_s'] / base:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['passes']} |")
    (args.out / "lambda-concurrency.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
