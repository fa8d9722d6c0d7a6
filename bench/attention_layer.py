"""One jina-v3-sized layer (hidden 1024, 16 heads, FFN 4096, RoPE, LoRA; tiny vocabulary),
plain exporter-style attention against the fused file of scripts/fuse_attention.py: seconds and
peak RSS of one `session.run` per length, each in a fresh process (so VmHWM is that run's).

    attention_layer.py OUTDIR [--lengths "512 2048 8192"] [--plain-max 8192] [--threads N]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(out):
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    sys.path.insert(0, str(ROOT / "scripts"))
    from encoder import Spec, build
    from fuse_attention import fuse_file

    path = out / "one-layer" / "model.onnx"
    if not path.is_file():
        build(Spec("embed", 1000, 1024, 1, 16, 4096, 8194, tasks=5, rank=4, seed=7, name="one_layer"), path)
    fused = path.with_name("model.fused.onnx")
    if not fused.is_file():
        fuse_file(path)
    return path, fused


def child(path, n, threads):
    """Runs in a fresh process: one warm-up-free run at `n` tokens; prints JSON."""
    import numpy as np
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ids = (np.arange(n, dtype=np.int64) % 900 + 4)[None]
    t0 = time.perf_counter()
    s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "task_id": np.array(4, dtype=np.int64)})
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "after_load_mib": before}))


def main():
    if sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--lengths", default="512 2048 8192")
    p.add_argument("--plain-max", type=int, default=8192, help="skip plain attention above this length (memory)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    plain, fused = make(args.out)
    rows = []
    for n in map(int, args.lengths.split()):
        for kind, path in (("plain", plain), ("fused", fused)):
            if kind == "plain" and n > args.plain_max:
                rows.append({"tokens": n, "kind": kind, "skipped": f"over --plain-max {args.plain_max}"})
                continue
            r = subprocess.run([sys.executable, __file__, "--child", str(path), str(n), str(args.threads)],
                               capture_output=True, text=True, check=True)
            rows.append({"tokens": n, "kind": kind, **json.loads(r.stdout.strip().splitlines()[-1])})
            print(f"[one layer] {kind} {n} tokens: {rows[-1]['seconds']:.2f} s, peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr, flush=True)
    (args.out / "bench-attention-layer.json").write_text(json.dumps(rows, indent=1))
    print("| tokens | plain s | plain peak MiB | fused s | fused peak MiB |\n|---|---|---|---|---|")
    for n in map(int, args.lengths.split()):
        pl = next(r for r in rows if r["tokens"] == n and r["kind"] == "plain")
        fu = next(r for r in rows if r["tokens"] == n and r["kind"] == "fused")
        cell = (lambda r: f"{r['seconds']:.2f} | {r['peak_rss_mib']:.0f}" if "seconds" in r else "– | –")
        print(f"| {n} | {cell(pl)} | {cell(fu)} |")


if __name__ == "__main__":
    main()
