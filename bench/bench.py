"""The benchmark: embedfn against baselines run in the same invocation, on the same machine and
the same inputs (see scripts/bench.sh, which sets everything up and runs this).

Contenders: the floor (Python `onnxruntime` `session.run` alone on the same pre-tokenized,
padded batches), embedfn over HTTP (and, when the binary knows DYNAMIC_BATCHING, a second
instance with DYNAMIC_BATCHING=false BATCH_WAIT_MS=0), embedfn under the Lambda Runtime API emulator, and two Python servers
(bench/python_servers.py): the seed's design (one `session.run` per text) and one padded run
per request. Workloads: bench/workloads.py. Every contender's first answer on every workload
must match the floor's within 1e-4, every request must succeed; otherwise the run fails.

Repetitions are interleaved (each repetition runs every contender, in a rotating order) so that
other load on the machine falls on all contenders alike. Writes bench-results.json and
bench-results.png to --out and prints the table.
"""

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime

import report
import workloads as wl
from contenders import (BATCHED, EMBEDFN, FLOOR, LAMBDA, NO_BATCHING, SEED, TRACT, WASM, WASM_NO_SNAPSHOT,
                         FloorWorker, HttpServer, LambdaFunction, embedfn_env, server_env)
from onnx_run import pad, pool, sigmoid
from system import cpu_model, physical_cores
from textmodel import TextModel

TOLERANCE = 1e-4
PRIMARY_MODEL = "minilm"  # cold start and RSS are those of the MiniLM instances
TRACT_MEMORY_CAP = 128 << 20  # Fermyon Wasm Functions' memory limit
WORKLOADS_OF = {FLOOR: "abcdf", EMBEDFN: "abcdef", NO_BATCHING: "abcde", LAMBDA: "abcd", WASM: "abcde",
                WASM_NO_SNAPSHOT: "b", TRACT: "abcdf", SEED: "abcde", BATCHED: "abcde"}
#: --contenders: short names
SHORT_NAMES = {"floor": FLOOR, "embedfn": EMBEDFN, "no-batching": NO_BATCHING, "lambda": LAMBDA, "wasm": WASM,
               "wasm-no-snapshot": WASM_NO_SNAPSHOT, "tract": TRACT, "seed": SEED, "batched": BATCHED}


def parse_args():
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True, help="the embedfn release binary")
    p.add_argument("--ort-lib", required=True, help="libonnxruntime.so for embedfn")
    p.add_argument("--models", required=True, type=Path, help="scripts/fetch-test-models.sh output")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("EMBEDFN_CACHE", Path.home() / ".cache/embedfn")) / "bench",
                   help="where bench-results.json and bench-results.png go")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    p.add_argument("--host-binary", help="embedfn-host; with --component adds the Wasm host contenders")
    p.add_argument("--component", help="the embedfn-spin component (.wasm)")
    p.add_argument("--tract-component", help="the tract build; with --host-binary and --wasmtime adds its row")
    p.add_argument("--wasmtime", help="the stock wasmtime CLI")
    p.add_argument("--contenders", help="only these (comma-separated; floor and embedfn always run): "
                   + ", ".join(SHORT_NAMES))
    return p.parse_args()


class Bench:
    """Starts the contenders' processes and runs the workloads on them."""

    def __init__(self, args, stack):
        self.args = args
        self.stack = stack
        self.threads = physical_cores()
        self.models = {name: TextModel(args.models / name) for name in ("minilm", "jina-embed-tiny", "jina-rerank-tiny")}
        self.workloads = wl.build(self.models, args.quick)
        self.logs = args.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        self.contenders = [FLOOR, EMBEDFN, LAMBDA, SEED, BATCHED]
        if b"DYNAMIC_BATCHING" in Path(args.binary).read_bytes():
            self.contenders.insert(2, NO_BATCHING)
        if args.host_binary and args.component:
            self.contenders[-2:-2] = [WASM, WASM_NO_SNAPSHOT]
        if args.host_binary and args.tract_component and args.wasmtime:
            self.contenders[-2:-2] = [TRACT]
        if args.contenders:
            wanted = {SHORT_NAMES[c.strip()] for c in args.contenders.split(",")} | {FLOOR, EMBEDFN}
            self.contenders = [c for c in self.contenders if c in wanted]
        self.snapshots = {}
        self.instances = {}  # (contender, model) -> process
        self.cold_starts = {c: [] for c in self.contenders}
        self.results = {c: {} for c in self.contenders}

    # --- processes ------------------------------------------------------------------------------
    def start(self, contender, model_name):
        """Starts one contender on one model; it is stopped when the run ends."""
        model = self.models[model_name]
        name = f"{contender} [{model_name}]"
        log = self.logs / (re.sub(r"[^a-z0-9]+", "-", f"{contender} {model_name}".lower()).strip("-") + ".log")
        probe = self.probe(model)
        if contender == FLOOR:
            proc = FloorWorker(name, log, model, self.threads, self.floor_batches(model_name))
        elif contender in (EMBEDFN, NO_BATCHING):
            extra = {"DYNAMIC_BATCHING": "false", "BATCH_WAIT_MS": "0"} if contender == NO_BATCHING else {}
            proc = HttpServer(name, log, [self.args.binary], server_env(embedfn_env(self.args.ort_lib, model, extra)), probe)
        elif contender in (WASM, WASM_NO_SNAPSHOT):
            # A fresh instance per request, as under Spin; with --snapshot the component is
            # pre-initialised (Wizer), so an instance pays no tokenizer parsing.
            snapshot = ["--snapshot"] if contender == WASM else []
            argv = [self.args.host_binary, self.args.component, *snapshot, "--graph", f"{model.dir.name}={model.dir}"]
            proc = HttpServer(name, log, argv, server_env(embedfn_env(self.args.ort_lib, model, {})), probe)
        elif contender == TRACT:
            # Stock `wasmtime serve` on the tract build, pre-initialised once per model (a build
            # step, not part of its cold start), its linear memory capped as on hosted Spin; each
            # instance logs its linear memory after every request.
            env = server_env({})
            argv = [self.args.wasmtime, "serve", "-S", "cli=y", "-W", f"max-memory-size={TRACT_MEMORY_CAP}",
                    "--env", "EMBEDFN_LOG_MEMORY=1", "--addr", f"127.0.0.1:{env['PORT']}",
                    self.tract_snapshot(model)]
            proc = HttpServer(name, log, argv, env, probe)
        elif contender == LAMBDA:
            proc = LambdaFunction(name, log, self.args.binary, embedfn_env(self.args.ort_lib, model, {}), probe)
        else:
            env = server_env({})
            argv = [sys.executable, str(Path(__file__).with_name("python_servers.py")), "--mode",
                    "seed" if contender == SEED else "batched", "--model", str(model.dir),
                    "--port", env["PORT"], "--threads", str(self.threads)]
            proc = HttpServer(name, log, argv, env, probe)
        self.stack.callback(proc.stop)
        return proc

    def tract_snapshot(self, model):
        """The tract component pre-initialised on `model` (made once per run)."""
        if model.dir.name not in self.snapshots:
            out = self.args.out / f"tract-{model.dir.name}.wasm"
            subprocess.run([self.args.host_binary, "snapshot", self.args.tract_component, str(out), "--graph",
                            f"{model.dir.name}={model.dir}"], check=True, capture_output=True,
                           env={**os.environ, "ORT_DYLIB_PATH": self.args.ort_lib})
            self.snapshots[model.dir.name] = str(out)
        return self.snapshots[model.dir.name]

    @staticmethod
    def probe(model):
        """The request that tells a server is up (cold start ends at its answer)."""
        if model.cross_encoder:
            return "/api/rerank", json.dumps({"query": "cold", "documents": ["start"]}).encode()
        return "/api/embed", json.dumps({"input": ["cold start"]}).encode()

    def floor_batches(self, model_name):
        """Padded batches per workload of `model_name`: every request where the floor is timed,
        else the first only (the reference for the correctness check)."""
        model = self.models[model_name]
        out = {}
        for w in self.workloads:
            if w.model == model_name:
                bodies = w.requests if w.key in WORKLOADS_OF[FLOOR] else w.requests[:1]
                out[w.key] = [pad(self.sequences(model, b), model.pad_id) for b in bodies]
        return out

    @staticmethod
    def sequences(model, body):
        """Token ids of one request's texts or (query, document) pairs."""
        if "documents" in body:
            return [model.pair(body["query"], d) for d in body["documents"]]
        return [model.encode(t) for t in body["input"]]

    def start_all(self, cold_reps):
        """Starts every contender on every model it needs; the primary model's instances are
        started `cold_reps` times (interleaved) to time cold starts, the last one is kept."""
        for rep in range(cold_reps):
            for c in self.contenders:
                proc = self.start(c, PRIMARY_MODEL)
                self.cold_starts[c].append(proc.cold_start_s)
                if rep < cold_reps - 1:
                    proc.stop()
                else:
                    self.instances[c, PRIMARY_MODEL] = proc
        for c in self.contenders:
            for model_name in {w.model for w in self.workloads if w.key in WORKLOADS_OF[c]} - {PRIMARY_MODEL}:
                self.instances[c, model_name] = self.start(c, model_name)

    # --- workloads ------------------------------------------------------------------------------
    def run_all(self):
        """Checks then times every workload on every contender, repetitions interleaved."""
        for w in self.workloads:
            started = time.perf_counter()
            runners = [c for c in self.contenders if w.key in WORKLOADS_OF[c]]
            expected = self.reference(w)
            for c in runners:
                if c != FLOOR:  # the floor is the reference
                    check(f"{c} on {w.key}", self.first_answer(c, w), expected)
            for rep in range(w.reps):
                shift = rep % len(runners)
                for c in runners[shift:] + runners[:shift]:
                    latencies, seconds = self.repetition(c, w)
                    entry = self.results[c].setdefault(w.key, {"latencies_s": [], "throughput": []})
                    entry["latencies_s"] += latencies
                    entry["throughput"].append(w.items_per_rep() / seconds)
            log(f"{w.title}: {len(runners)} contenders x {w.reps} reps in {time.perf_counter() - started:.0f} s")

    def reference(self, w):
        """What the first request of `w` must answer, from the floor's output."""
        first = self.floor(w.model).run(w.key)[1]
        if w.path == "/api/rerank":
            return sigmoid(first)
        _, mask = pad(self.sequences(self.models[w.model], w.requests[0]), self.models[w.model].pad_id)
        return pool(first, mask)

    def floor(self, model_name):
        """The floor worker of a model."""
        return self.instances[FLOOR, model_name]

    def first_answer(self, contender, w):
        """The contender's answer to the first request of `w`, as an array (vectors, or scores in
        document order)."""
        proc = self.instances[contender, w.model]
        _, status, body = proc.call(w.path, json.dumps(w.requests[0]).encode())
        if status != 200:
            raise RuntimeError(f"{contender} on {w.key}: status {status}: {body[:300]!r}")
        answer = json.loads(body)
        if w.path == "/api/rerank":
            scores = np.full(len(w.requests[0]["documents"]), np.nan)
            for r in answer["results"]:
                scores[r["index"]] = r["relevance_score"]
            return scores
        return np.asarray(answer["embeddings"], dtype=np.float64)

    def repetition(self, contender, w):
        """One repetition: (latency of each request or batch, seconds for throughput)."""
        proc = self.instances[contender, w.model]
        if contender == FLOOR:
            latencies = proc.run(w.key)[0]
            return latencies, sum(latencies)
        bodies = [json.dumps(b).encode() for b in w.requests]
        if w.clients == 1:
            answers = [proc.call(w.path, b) for b in bodies]
            seconds = sum(a[0] for a in answers)
        else:
            answers, seconds = concurrently(proc, w.path, bodies, w.clients)
        for body, (_, status, raw) in zip(w.requests, answers, strict=True):
            validate(f"{contender} on {w.key}", w, body, status, raw)
        return [a[0] for a in answers], seconds

    def tract_facts(self):
        """The tract build's component size and linear-memory high-water per model, and its
        instantiation cost: p50 of a model-free request (a POST to /api/version, answered by the
        route table with no inference, a fresh instance each) minus the native server's."""
        if TRACT not in self.contenders:
            return None

        def p50_version(proc):
            return float(np.median([proc.call("/api/version", b"{}")[0] for _ in range(30)])) * 1000

        facts = {"instantiation_ms": p50_version(self.instances[TRACT, PRIMARY_MODEL])
                 - p50_version(self.instances[EMBEDFN, PRIMARY_MODEL]), "models": {}}
        for (c, model_name), proc in self.instances.items():
            if c == TRACT:
                sizes = [int(m) for m in re.findall(r"linear memory (\d+) bytes", Path(proc.log_path).read_text())]
                facts["models"][model_name] = {
                    "component_mib": Path(self.snapshots[model_name]).stat().st_size / 2**20,
                    "memory_high_water_mib": max(sizes) / 2**20 if sizes else None}
        return facts

    def peak_rss(self):
        """VmHWM of every live instance, KiB, by contender then model."""
        out = {c: {} for c in self.contenders}
        for (c, model_name), proc in self.instances.items():
            out[c][model_name] = proc.peak_rss_kib()
        return out


def concurrently(proc, path, bodies, clients):
    """Sends `bodies` from `clients` threads (client i sends bodies i, i + clients, ...);
    (answers in body order, wall seconds)."""
    answers = [None] * len(bodies)
    errors = []

    def client(i):
        try:
            for j in range(i, len(bodies), clients):
                answers[j] = proc.call(path, bodies[j])
        except Exception as e:  # noqa: BLE001 - reported below, the run fails
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, first: {errors[0]!r}")
    return answers, seconds


def validate(what, w, body, status, raw):
    """Fails unless a timed answer is a 200 with one vector or score per input."""
    if status != 200:
        raise RuntimeError(f"{what}: status {status}: {raw[:300]!r}")
    answer = json.loads(raw)
    got = len(answer["results"] if "documents" in body else answer["embeddings"])
    if got != w.items(body):
        raise RuntimeError(f"{what}: {got} results for {w.items(body)} inputs")


def check(what, got, expected):
    """Fails unless `got` matches the floor's answer within TOLERANCE."""
    if got.shape != expected.shape:
        raise AssertionError(f"WRONG ANSWER: {what}: shape {got.shape}, floor {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCE:
        raise AssertionError(f"WRONG ANSWER: {what}: max |diff| vs floor {diff:.2e} > {TOLERANCE}")


def summarize(bench, rss):
    """Medians and percentiles per contender and workload, cold starts and RSS."""
    rows = {}
    for c in bench.contenders:
        rows[c] = {"workloads": {}, "cold_start_s": float(np.median(bench.cold_starts[c])),
                   "cold_starts_s": bench.cold_starts[c], "peak_rss_kib": rss[c][PRIMARY_MODEL],
                   "peak_rss_kib_by_model": rss[c]}
        for key, r in bench.results[c].items():
            lat = np.asarray(r["latencies_s"])
            rows[c]["workloads"][key] = {
                "throughput_per_s": float(np.median(r["throughput"])), "throughput_per_rep": r["throughput"],
                "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
                "requests": len(lat), "latencies_ms": [round(x * 1000, 4) for x in lat]}
    return rows


def log(msg):
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def document(args, bench, rows, binary_sha256, seconds):
    """Everything bench-results.json holds."""
    return {
        "machine": {"cpu": cpu_model(), "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "onnxruntime": {"embedfn": Path(args.ort_lib).name, "python": onnxruntime.__version__},
        "binary": args.binary, "binary_sha256": binary_sha256, "quick": args.quick, "tolerance": TOLERANCE,
        "workloads": {w.key: {"title": w.title, "model": w.model, "path": w.path, "requests_per_rep": len(w.requests),
                              "items_per_rep": w.items_per_rep(), "reps": w.reps, "clients": w.clients}
                      for w in bench.workloads},
        "contenders": rows,
        "session_creation_s": rows[FLOOR]["cold_start_s"],
        "ratios": report.ratios(rows),
        "seconds": seconds,
    }


def main():
    """Runs the whole benchmark; any failure exits non-zero with every process stopped."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    binary_sha256 = hashlib.sha256(Path(args.binary).read_bytes()).hexdigest()
    with contextlib.ExitStack() as stack:
        bench = Bench(args, stack)
        log(f"{len(bench.contenders)} contenders, {bench.threads} physical cores, "
            f"{'quick' if args.quick else 'full'} run; logs in {bench.logs}")
        bench.start_all(cold_reps=1 if args.quick else 5)
        log("all contenders started")
        bench.run_all()
        rss = bench.peak_rss()
        tract = bench.tract_facts()
    rows = summarize(bench, rss)
    if tract:
        rows[TRACT]["tract"] = tract
    results = document(args, bench, rows, binary_sha256, time.perf_counter() - started)
    (args.out / "bench-results.json").write_text(json.dumps(results, indent=1))
    print(report.table(results))
    report.plot(results, args.out / "bench-results.png")
    log(f"wrote {args.out / 'bench-results.json'} and {args.out / 'bench-results.png'} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
