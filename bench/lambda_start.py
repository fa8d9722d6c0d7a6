"""Lambda start to first answer, as Lambda would drive the real `embedfn` binary (the project's
Runtime API emulator, tests/lambda_runtime_api.py), for one model directory:

* empty cache: on-demand init with an empty optimized-graph cache, then the first invocation;
* baked cache: the same with the cache the first start wrote (what an image built with
  `--init-only` and `ORT_CACHE_DIR` inside it starts from);
* after warm-up: `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start` runs the init and warms every model
  before `restore/next`; the figure is the first invocation after the restore, which is what a
  SnapStart cold start serves once the snapshot is restored (the restore itself is Lambda's).

Each row: the init (process start until it polls for work), the first invocation's latency, and
the sum. Run by `scripts/bench.sh --lambda-start DIR`; writes `lambda-start.json` to `--out`.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from contenders import binary_args, embedfn_env, function_url_event
from textmodel import TextModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lambda_runtime_api import RuntimeApi, start_function  # noqa: E402


def parse_args(argv=None):
    p = binary_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--model", type=Path, required=True, help="a model directory")
    p.add_argument("--quantization", default="none")
    p.add_argument("--memory-mb", default="10240", help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    return p.parse_args(argv)


def event(model, text):
    path = "/api/rerank" if model.cross_encoder else "/api/embed"
    body = {"query": text, "documents": [text]} if model.cross_encoder else {"input": [text]}
    return function_url_event("POST", path, json.dumps(body).encode())


def start(args, model, cache, snap):
    api = RuntimeApi()
    env = embedfn_env(args.ort_lib, model, {"ONNX_QUANTIZATION": args.quantization, "ORT_CACHE_DIR": str(cache),
                                            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": args.memory_mb})
    if snap:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    t0 = time.perf_counter()
    proc = start_function(args.binary, api, env)
    try:
        if not api.wait_ready(proc, 1800):
            raise RuntimeError(f"no poll for work: {api.init_errors}")
        init = time.perf_counter() - t0
        t1 = time.perf_counter()
        kind, answer = api.invoke(event(model, "the first request after the start"), timeout=1800)
        first = time.perf_counter() - t1
        if kind != "response" or answer["statusCode"] != 200:
            raise RuntimeError(f"first invocation: {kind} {str(answer)[:300]}")
        return {"init_s": init, "first_answer_s": first, "total_s": init + first,
                "snap_start": snap, "restore_next_called": api.restored is not None}
    finally:
        proc.terminate()
        proc.wait(30)
        api.close()


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = TextModel(args.model)
    cache = args.out / "lambda-start-cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = {"empty cache": start(args, model, cache, False),
            "baked cache": start(args, model, cache, False),
            "after warm-up (SnapStart, baked cache)": start(args, model, cache, True)}
    print(f"Lambda start, {model.name} ({args.quantization}), {args.memory_mb} MB")
    print("| start | init s | first answer s | total s |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['init_s']:.2f} | {r['first_answer_s']:.3f} | {r['total_s']:.2f} |")
    (args.out / "lambda-start.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
