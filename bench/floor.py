"""The floor: `session.run` alone on pre-tokenized, padded batches (no HTTP, no tokenization),
in a process of its own so that its peak RSS is the session's and the runs'. A worker driven
with pickles over stdin/stdout:

    parent: {"model", "threads", "task_id", "batches": {workload: [(ids, mask), ...]}}
    worker: {"session_s": seconds to create the session}
    parent: a workload name   worker: {"latencies": [s per batch], "first": output of batch 0}
    parent: None              worker: exits (the parent reads its VmHWM before)
"""

import pickle
import sys
import time

import onnxruntime as ort

from onnx_run import feeds, floor_options


def send(obj):
    """Writes one answer to the parent."""
    pickle.dump(obj, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def run_batches(session, batch_feeds):
    """Runs each batch once; returns the seconds per run and the first batch's output."""
    latencies, first = [], None
    for f in batch_feeds:
        t0 = time.perf_counter()
        out = session.run(None, f)[0]
        latencies.append(time.perf_counter() - t0)
        first = out if first is None else first
    return latencies, first


def main():
    """Creates the session (timed), then answers the parent's requests until it sends None."""
    job = pickle.load(sys.stdin.buffer)
    t0 = time.perf_counter()
    session = ort.InferenceSession(job["model"], floor_options(job["threads"]), providers=job.get("providers") or ["CPUExecutionProvider"])
    send({"session_s": time.perf_counter() - t0})
    prepared = {name: [feeds(session, ids, mask, job["task_id"]) for ids, mask in batches]
                for name, batches in job["batches"].items()}
    while (name := pickle.load(sys.stdin.buffer)) is not None:
        latencies, first = run_batches(session, prepared[name])
        send({"latencies": latencies, "first": first})


if __name__ == "__main__":
    main()
