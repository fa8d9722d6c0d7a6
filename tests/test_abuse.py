"""What one hostile request or slow client can cost the real `embedfn` binary.

Each row of the table is sent alone to a fresh server (MiniLM int8 and the Jina-shaped reranker
fixture, default limits), and the server's own CPU time (`/proc/<pid>/stat`) and peak memory
growth (`VmHWM` in `/proc/<pid>/status`) across that one request are held to a stated bound:
the work a request causes follows what is served, never what is sent.
"""

import os
import socket
import threading
import time

import pytest
import requests

import reports

MIB4 = 4 * 1024 * 1024
CPU_BOUND_S = 3.0
HWM_BOUND_MIB = 300
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def hwm_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def words(n_bytes):
    """Real-looking text of about `n_bytes` bytes (many tokens, as an attacker would send)."""
    unit = "the quick brown fox jumps over the lazy dog 你好世界 "
    return (unit * (n_bytes // len(unit.encode()) + 1))[: n_bytes // 2]


ROWS = [
    # (name, path, body, status)
    ("rerank, one 4 MiB document", "/api/rerank", lambda: {"query": "fox", "documents": [words(MIB4)]}, 413),
    ("Jina rerank, one 4 MiB document", "/v1/rerank", lambda: {"query": "fox", "documents": [words(MIB4)]}, 413),
    ("TEI /rerank, one 4 MiB text, truncate", "/rerank",
     lambda: {"query": "fox", "texts": [words(MIB4)], "truncate": True}, 413),
    ("TEI /tokenize, 4 MiB", "/tokenize", lambda: {"inputs": words(MIB4)}, 413),
    ("TEI /embed_all, 4 MiB, truncate", "/embed_all", lambda: {"inputs": words(MIB4), "truncate": True}, 200),
    ("TEI /embed_all, 256 texts x 256 tokens", "/embed_all",
     lambda: {"inputs": ["fox " * 254] * 256, "truncate": True}, 413),
    ("/api/embed, 2048 inputs x 2 KiB", "/api/embed", lambda: {"input": [words(4096)] * 2048}, 413),
    ("/v1/embeddings, 4 MiB, truncate", "/v1/embeddings", lambda: {"input": words(MIB4)}, 200),
]


@pytest.fixture
def fresh(start, models_dir):
    def _fresh(**env):
        return start(EMBEDDINGS_MODEL_ID=str(models_dir / "minilm"),
                     RERANKER_MODEL_ID=str(models_dir / "jina-rerank-tiny"), **env)
    return _fresh


@pytest.mark.parametrize("name,path,body,status", ROWS, ids=[r[0] for r in ROWS])
def test_one_request_costs_what_is_served(fresh, name, path, body, status):
    server = fresh()
    # Warm both models first, so the figures are the request's own.
    assert server.post("/api/embed", {"input": "warm"}).status_code == 200
    assert server.post("/api/rerank", {"query": "warm", "documents": ["up"]}).status_code == 200
    payload = body()
    pid = server.proc.pid
    cpu0, hwm0 = cpu_seconds(pid), hwm_mib(pid)
    r = server.post(path, payload)
    cpu, grew = cpu_seconds(pid) - cpu0, hwm_mib(pid) - hwm0
    reports.LINES.append(f"abuse: {name}: {r.status_code}, {cpu:.2f} s CPU, VmHWM +{grew:.0f} MiB, "
                         f"answer {len(r.content)} bytes")
    assert r.status_code == status, r.text[:300]
    assert cpu <= CPU_BOUND_S, f"{name}: {cpu:.2f} s of server CPU"
    assert grew <= HWM_BOUND_MIB, f"{name}: peak memory grew {grew:.0f} MiB"
    assert server.get("/health").status_code == 200


def test_slow_bodies_hold_no_slot_and_time_out(fresh):
    server = fresh(BODY_TIMEOUT_MS="2000", MAX_CONCURRENT_REQUESTS="2", MAX_QUEUE="2")
    socks = []
    for _ in range(80):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"input\": ")
        socks.append(s)
    started = time.time()
    r = server.post("/api/embed", {"input": "a normal request"})
    took = time.time() - started
    reports.LINES.append(f"abuse: 80 trickling bodies open, a normal request: {r.status_code} in {took:.2f} s")
    assert r.status_code == 200 and took < 2, (r.status_code, took)
    # Each slow body is answered 408 once its time is up.
    answer = socks[0].recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert '"error"' in answer
    for s in socks:
        s.close()


#: Tens of seconds of work on one thread: 1,000 full-length MiniLM sequences (under the request
#: token cap).
LONG = {"input": ["fox " * 250 + str(i) for i in range(1000)]}


def cpu_once_settled(pid, settle=3.0, window=2.0):
    """The server's CPU seconds over `window`, after `settle` seconds in which the pass under
    way (up to 16 full-length sequences) ends: nothing after it may run."""
    time.sleep(settle)
    cpu0 = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - cpu0


def test_a_request_past_its_deadline_is_dropped(fresh):
    server = fresh(REQUEST_TIMEOUT_MS="1000")
    started = time.time()
    r = server.post("/api/embed", LONG)
    took = time.time() - started
    assert r.status_code == 504, r.text[:200]
    assert took < 5, took
    idle = cpu_once_settled(server.proc.pid)
    reports.LINES.append(f"abuse: REQUEST_TIMEOUT_MS=1000: 504 in {took:.2f} s, then {idle:.2f} s CPU in 2 s")
    assert idle < 0.5, f"the dropped request still ran: {idle:.2f} s CPU in 2 s"
    assert server.post("/api/embed", {"input": "next"}).status_code == 200


def test_work_for_a_departed_client_stops(fresh):
    server = fresh()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url + "/api/embed", json=LONG, timeout=1.5)
    idle = cpu_once_settled(server.proc.pid)
    reports.LINES.append(f"abuse: client gone after 1.5 s: then {idle:.2f} s CPU in 2 s")
    assert idle < 0.5, f"work for a departed client went on: {idle:.2f} s CPU in 2 s"
    assert server.post("/api/embed", {"input": "next"}).status_code == 200


def test_forms_are_refused_before_any_work(fresh):
    server = fresh()
    r = requests.post(server.url + "/api/embed", data='{"input": "x"}', timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = requests.post(server.url + "/v1/embeddings", data='{"input": "x"}', timeout=10,
                      headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"


def test_sigterm_ends_within_the_grace_period(fresh):
    server = fresh(SHUTDOWN_GRACE_MS="1000")
    outcome = []

    def long_request():
        try:
            outcome.append(requests.post(server.url + "/api/embed", json=LONG, timeout=60).status_code)
        except requests.ConnectionError as e:  # the grace period ended before the answer
            outcome.append(type(e).__name__)

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(1)
    started = time.time()
    server.proc.terminate()
    server.proc.wait(15)
    took = time.time() - started
    reports.LINES.append(f"abuse: SIGTERM with a long request in flight, SHUTDOWN_GRACE_MS=1000: exited in {took:.2f} s")
    assert took < 4, took
    worker.join(60)
    assert outcome == ["ConnectionError"], outcome


def test_no_cors_unless_origins_are_listed(fresh):
    """A browser page may not read embedfn's answers unless CORS_ALLOW_ORIGINS lists its origin."""
    page = {"Origin": "https://app.example"}
    preflight = {**page, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    default = fresh()
    r = default.post("/api/embed", {"input": "x"}, headers=page)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert requests.options(default.url + "/api/embed", headers=preflight, timeout=10).status_code == 405
    listed = fresh(CORS_ALLOW_ORIGINS="https://app.example", API_KEY="k")
    r = requests.options(listed.url + "/api/embed", headers=preflight, timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"]
    r = listed.post("/api/embed", {"input": "x"}, headers={**page, "Authorization": "Bearer k"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = listed.post("/api/embed", {"input": "x"}, headers={"Origin": "https://evil.example", "Authorization": "Bearer k"})
    assert "access-control-allow-origin" not in r.headers
