"""A small Lambda Runtime API on loopback: the endpoints a custom runtime (`provided.al2023`)
talks to, so the real `embedfn` binary can be driven as Lambda drives it.

    GET  /2018-06-01/runtime/invocation/next          -> the next event (blocks)
    POST /2018-06-01/runtime/invocation/{id}/response -> the function's result
    POST /2018-06-01/runtime/invocation/{id}/error    -> a function error
    POST /2018-06-01/runtime/init/error               -> an init failure
    GET  /2018-06-01/runtime/restore/next             -> SnapStart: the init is done and the
                                                         snapshot taken; returns after the restore
    POST /2018-06-01/runtime/restore/error            -> an after-restore failure

Used by `tests/test_lambda.py` and by the benchmark.
"""

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    """The emulator. `invoke(payload)` queues one event and waits for the function's answer."""

    def __init__(self):
        self.events = queue.Queue()
        self.answers = {}
        self.init_errors = []
        self.restore_errors = []
        self.first_poll = None
        self.restored = None  # when the function called restore/next
        self.cond = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == PREFIX + "/restore/next":
                    # The snapshot would be taken here; the restored environment goes on.
                    with api.cond:
                        api.restored = time.perf_counter()
                        api.cond.notify_all()
                    return self.reply(200, b"", [("Content-Type", "application/json")])
                if self.path != PREFIX + "/invocation/next":
                    return self.reply(404)
                with api.cond:
                    api.first_poll = api.first_poll or time.perf_counter()
                    api.cond.notify_all()
                request_id, payload = api.events.get()
                deadline = int((time.time() + 900) * 1000)
                self.reply(200, payload, [
                    ("Content-Type", "application/json"),
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                    ("Lambda-Runtime-Invoked-Function-Arn",
                     "arn:aws:lambda:eu-west-1:123456789012:function:embedfn"),
                    ("Lambda-Runtime-Trace-Id", "Root=1-6740f1b2-0f5e2d1c3b4a59687a6b5c4d;Sampled=0"),
                ])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                with api.cond:
                    if parts == ["init", "error"]:
                        api.init_errors.append(json.loads(body or b"{}"))
                    elif parts == ["restore", "error"]:
                        api.restore_errors.append(json.loads(body or b"{}"))
                    elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                        api.answers[parts[1]] = (parts[2], body, time.perf_counter())
                    else:
                        return self.reply(404)
                    api.cond.notify_all()
                self.reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a function process that exits mid-poll resets its connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, payload, timeout=120):
        """Sends `payload` (a dict, or raw bytes) as one invocation; returns (kind, decoded JSON
        answer) where kind is "response" or "error"."""
        request_id = str(uuid.uuid4())
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.events.put((request_id, raw))
        with self.cond:
            if not self.cond.wait_for(lambda: request_id in self.answers, timeout):
                raise TimeoutError(f"no answer to invocation {request_id} within {timeout} s")
            kind, body, _ = self.answers.pop(request_id)
        return kind, json.loads(body)

    def wait_ready(self, proc, timeout=60):
        """Waits until the function polls for its first event (init done), or it exits."""
        with self.cond:
            self.cond.wait_for(lambda: self.first_poll or proc.poll() is not None or self.init_errors, timeout)
        return self.first_poll

    def close(self):
        self.server.shutdown()


def start_function(binary, api, env, extra_env=None):
    """Starts `binary` as Lambda would, pointed at `api`."""
    full = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
    full.update({
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "embedfn",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/embedfn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/21/[$LATEST]0123456789abcdef",
        "AWS_REGION": "eu-west-1",
        "HOME": "/nonexistent",
        "USE_CUDA": "false",
        "HF_HUB_OFFLINE": "1",
    })
    full.update(env)
    full.update(extra_env or {})
    return subprocess.Popen([binary], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
