"""The contenders' processes: the floor worker, embedfn over HTTP, embedfn under the Lambda
Runtime API emulator, and the Python servers. Each is started, timed from exec to its first
successful answer, asked for its peak RSS, and stopped."""

import base64
import contextlib
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from system import peak_rss_kib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from lambda_runtime_api import RuntimeApi, start_function  # noqa: E402

FLOOR, EMBEDFN, NO_BATCHING, LAMBDA, WASM, WASM_NO_SNAPSHOT, TRACT, SEED, BATCHED = (
    "floor (ORT session.run)", "embedfn", "embedfn (no dynamic batching)", "embedfn Lambda",
    "embedfn Wasm host", "embedfn Wasm host, no snapshot", "embedfn tract, wasmtime serve",
    "seed-style Python", "batched Python")
START_TIMEOUT_S = 60
#: seconds one request may take (the scale section raises it for 8192-token inputs)
CALL_TIMEOUT_S = 120
#: the floor's execution providers (None: CPU); the scale section sets CUDA with --cuda
FLOOR_PROVIDERS = None
FUNCTION_URL_EVENT = ROOT / "tests" / "fixtures" / "lambda" / "function-url.json"


def function_url_event(method, path, body=b""):
    """A Function URL invocation event (the fixture's) for `method path` with a JSON body."""
    event = json.loads(FUNCTION_URL_EVENT.read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = body.decode()
    return event


def free_port():
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path, lines=25):
    """The last lines of a process's log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """A child process with a log file; stopped on `stop()`, however it was started."""

    def __init__(self, name, log_path):
        self.name = name
        self.log_path = log_path
        self.proc = None
        self.cold_start_s = None

    @contextlib.contextmanager
    def starting(self):
        """Stops the process if anything in the block fails (a constructor's start-up)."""
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def fail(self, why):
        """Stops the process and raises with the end of its log."""
        self.stop()
        raise RuntimeError(f"{self.name}: {why}\n--- {self.log_path} ---\n{log_tail(self.log_path)}")

    def peak_rss_kib(self):
        """VmHWM of the live process."""
        if self.proc.poll() is not None:
            self.fail(f"exited with {self.proc.returncode}")
        return peak_rss_kib(self.proc.pid)

    def stop(self):
        """Terminates the process (kills it after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FloorWorker(Process):
    """bench/floor.py in its own process: `session.run` on pre-padded batches."""

    def __init__(self, name, log_path, model, threads, batches):
        super().__init__(name, log_path)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("floor.py"))],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        with self.starting():
            self._send({"model": model.onnx_path, "threads": threads, "task_id": model.task_id, "batches": batches,
                        "providers": FLOOR_PROVIDERS})
            self.cold_start_s = self._receive()["session_s"]

    def _send(self, obj):
        try:
            pickle.dump(obj, self.proc.stdin)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.fail("the floor worker is gone")

    def _receive(self):
        try:
            return pickle.load(self.proc.stdout)
        except EOFError:
            self.fail("the floor worker exited")

    def run(self, workload_key):
        """Runs the workload's batches once: (seconds per batch, the first batch's output)."""
        self._send(workload_key)
        answer = self._receive()
        return answer["latencies"], answer["first"]

    def stop(self):
        """Asks the worker to exit, then makes sure it did."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                pickle.dump(None, self.proc.stdin)
                self.proc.stdin.close()
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        super().stop()


class HttpServer(Process):
    """A server process on a loopback port, ready once `probe` (path, body) answers 200."""

    def __init__(self, name, log_path, argv, env, probe):
        super().__init__(name, log_path)
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.local = threading.local()
        t0 = time.perf_counter()
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        with self.starting():
            self._wait_for(probe)
        self.cold_start_s = time.perf_counter() - t0

    def _wait_for(self, probe):
        deadline = time.perf_counter() + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with {self.proc.returncode} while starting")
            try:
                _, status, body = self.call(*probe)
            except requests.ConnectionError:
                time.sleep(0.005)
                continue
            if status != 200:
                self.fail(f"first request answered {status}: {body[:300]!r}")
            return
        self.fail(f"no answer within {START_TIMEOUT_S} s")

    def call(self, path, body):
        """POSTs JSON bytes; (seconds until the whole body arrived, status, body bytes)."""
        session = getattr(self.local, "session", None) or self._new_session()
        t0 = time.perf_counter()
        r = session.post(self.url + path, data=body, headers={"Content-Type": "application/json"},
                         timeout=CALL_TIMEOUT_S)
        return time.perf_counter() - t0, r.status_code, r.content

    def _new_session(self):
        self.local.session = requests.Session()
        return self.local.session


class LambdaFunction(Process):
    """The embedfn binary under tests/lambda_runtime_api.py, called with Function URL events."""

    def __init__(self, name, log_path, binary, env, probe):
        super().__init__(name, log_path)
        self.api = RuntimeApi()
        self.log = open(log_path, "a")
        t0 = time.perf_counter()
        self.proc = start_function(binary, self.api, env)
        self.drains = [threading.Thread(target=_copy_lines, args=(stream, self.log), daemon=True)
                       for stream in (self.proc.stdout, self.proc.stderr)]  # pipes: never let them fill
        for t in self.drains:
            t.start()
        with self.starting():
            if not self.api.wait_ready(self.proc, START_TIMEOUT_S):
                self.fail(f"did not poll for events (init errors: {self.api.init_errors})")
            _, status, body = self.call(*probe)
            if status != 200:
                self.fail(f"first invocation answered {status}: {body[:300]!r}")
        self.cold_start_s = time.perf_counter() - t0

    def call(self, path, body):
        """One invocation; (seconds until the answer was posted back, HTTP status, body bytes)."""
        event = function_url_event("POST", path, body)
        t0 = time.perf_counter()
        kind, answer = self.api.invoke(event)
        took = time.perf_counter() - t0
        if kind != "response":
            self.fail(f"function error: {answer}")
        raw = answer.get("body") or ""
        raw = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
        return took, answer["statusCode"], raw

    def stop(self):
        """Stops the function, then the emulator."""
        super().stop()
        for t in self.drains:
            t.join(5)
        self.api.close()
        self.log.close()


def _copy_lines(stream, log):
    """Appends each line of `stream` to `log` until the stream ends."""
    for line in stream:
        log.write(line)
        log.flush()


def binary_args(parser):
    """The options of a bench section that starts the embedfn binary: --binary, --ort-lib, --out."""
    parser.add_argument("--binary", required=True)
    parser.add_argument("--ort-lib", required=True)
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/embedfn/bench")
    return parser


def embedfn_env(ort_lib, model, extra):
    """embedfn's settings for serving `model` (a TextModel) alone, as tests/conftest.py sets
    them but with the default ORT_INTRA_THREADS (physical cores)."""
    return {"ORT_DYLIB_PATH": ort_lib, "USE_CUDA": "false", "HF_HUB_OFFLINE": "1",
            "EMBEDDINGS_MODEL_ID": "none" if model.cross_encoder else str(model.dir),
            "RERANKER_MODEL_ID": str(model.dir) if model.cross_encoder else "none", **extra}


def server_env(settings):
    """A server's environment: PATH, HOME, LANG and the library and module paths from ours (on a
    GPU machine the CUDA libraries are often found through LD_LIBRARY_PATH), a free port on
    loopback, `settings`."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LD_LIBRARY_PATH", "PYTHONPATH")}
    return {**env, "HOST": "127.0.0.1", "PORT": str(free_port()), **settings}
