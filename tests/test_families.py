"""Model families and exports beyond one plain graph, on the real `embedfn` binary, every vector
compared with the independent reference (`reference.py`: each text alone through Python ONNX
Runtime + tokenizers).

* `qwen3-embed-past-tiny`: Optimum's with-past export of qwen3-embed-tiny (`past_key_values.*`
  inputs, `present.*` outputs). embedfn feeds an empty cache, so its vectors are the plain
  graph's, on mixed-length, left-padded batches.
* `scripts/optimize-model.sh` on a decoder: causal attention with grouped KV heads becomes
  ONNX Runtime's `GroupQueryAttention` (unpadded passes), served within 1e-5 of the plain graph.
* `jina-embeddings-v5-text-nano` (`decoder_dirs.py`): one server configured with the family's id
  loads its four per-task members (EuroBERT-style bidirectional encoders with last-token pooling)
  and serves each request with the member of its task and that member's own prompt, on every
  embedding API.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from parity import close
from reference import Model

PAST, PLAIN = "qwen3-embed-past-tiny", "qwen3-embed-tiny"
FAMILY = "jina-embeddings-v5-text-nano"
TASKS = ("retrieval", "text-matching", "classification", "clustering")
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog.", "你好，世界！", "a", "word " * 700]
QUERIES = ["What is the capital of Germany?", "where is the cat"]


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def openai(server, body):
    return [d["embedding"] for d in ok(server.post("/v1/embeddings", body))["data"]]


@pytest.fixture(scope="module")
def members(models_dir):
    dirs = {t: models_dir / f"{FAMILY}-{t}" for t in TASKS}
    for d in dirs.values():
        assert (d / "onnx" / "model.onnx").is_file(), f"fixture {d.name} missing in {models_dir}"
    return {t: Model(d) for t, d in dirs.items()}


@pytest.fixture(scope="module")
def family(start, models_dir, members):
    return start(EMBEDDINGS_MODEL_ID=str(models_dir / FAMILY), RERANKER_MODEL_ID="none")


# --- with-past exports ---------------------------------------------------------------------------

def test_with_past_export_serves_the_plain_graphs_vectors(start, models_dir):
    past_ref, plain_ref = Model(models_dir / PAST), Model(models_dir / PLAIN)
    inputs = [i.name for i in past_ref.session.get_inputs()]
    assert sum(n.startswith("past_key_values.") for n in inputs) == 4, inputs
    assert any(n.startswith("present.") for n in past_ref.outputs)
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / PAST), RERANKER_MODEL_ID="none")
    routes = (openai(server, {"input": TEXTS}), ok(server.post("/api/embed", {"input": TEXTS}))["embeddings"],
              ok(server.post("/embed", {"inputs": TEXTS})))
    for route in routes:
        for v, t in zip(route, TEXTS):
            close(v, past_ref.embed(t))
            close(v, plain_ref.embed(t))
    # Token-level rows of a left-padded batch: each text's own, padding left out.
    states = ok(server.post("/embed_all", {"inputs": TEXTS[:4]}))
    for rows, t in zip(states, TEXTS[:4]):
        close(np.array(rows).ravel(), past_ref.token_states(t).ravel())
    server.stop()


def test_a_fused_decoder_takes_group_query_attention_and_matches(start, models_dir, tmp_path):
    d = shutil.copytree(models_dir / PLAIN, tmp_path / PLAIN)
    script = Path(__file__).resolve().parent.parent / "scripts" / "fuse_attention.py"
    out = subprocess.run([sys.executable, str(script), str(d / "onnx" / "model.onnx")], check=True,
                         capture_output=True, text=True).stderr
    assert "2 attention blocks fused into GroupQueryAttention (causal)" in out, out
    ops = {n.op_type for g in onnx.load(str(d / "onnx" / "model.fused.onnx")).graph.node
           for a in g.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node}
    assert "GroupQueryAttention" in ops, ops
    ref = Model(models_dir / PLAIN)
    server = start(EMBEDDINGS_MODEL_ID=str(d), RERANKER_MODEL_ID="none")
    for t in TEXTS:  # one text per request: unpadded, the fused branch
        close(openai(server, {"input": t})[0], ref.embed(t), 1e-5)
    for v, t in zip(openai(server, {"input": TEXTS}), TEXTS):  # padded: the plain branch
        close(v, ref.embed(t), 1e-5)
    server.stop()
    assert "attention-fused" in server.proc.stdout.read()


def test_the_memory_budget_counts_a_fused_file_as_fused_for_a_lone_text(start, models_dir, tmp_path):
    """A 512-token text on the fused decoder needs ~10 MiB by the budget's estimate, ~20 MiB if
    its attention were plain: with ~15 MiB of room it must run whole, not be cut to fit."""
    d = shutil.copytree(models_dir / PLAIN, tmp_path / PLAIN)
    script = Path(__file__).resolve().parent.parent / "scripts" / "fuse_attention.py"
    subprocess.run([sys.executable, str(script), str(d)], check=True, capture_output=True)
    text = "word " * 700  # cut to the model's 512 tokens
    probe = start(EMBEDDINGS_MODEL_ID=str(d), RERANKER_MODEL_ID="none")
    resident = int(re.search(r"^embedfn_memory_resident_bytes (\d+)", probe.get("/metrics").text, re.M).group(1))
    probe.stop()
    server = start(EMBEDDINGS_MODEL_ID=str(d), RERANKER_MODEL_ID="none", MAX_MEMORY=str(resident + (15 << 20)))
    answer = ok(server.post("/api/embed", {"input": text}))
    assert answer["prompt_eval_count"] == 512, answer["prompt_eval_count"]
    close(answer["embeddings"][0], Model(models_dir / PLAIN).embed(text), 1e-5)
    # The plain file under the same room is cut to what plain attention fits.
    plain = start(EMBEDDINGS_MODEL_ID=str(d), RERANKER_MODEL_ID="none", MAX_MEMORY=str(resident + (15 << 20)),
                  ONNX_FUSED_ATTENTION="false")
    assert ok(plain.post("/api/embed", {"input": text}))["prompt_eval_count"] < 512


# --- jina-embeddings-v5-text: one member per task ------------------------------------------------

def test_the_family_id_loads_every_member(family):
    names = [m["id"] for m in ok(family.get("/v1/models"))["data"]]
    assert [n.rsplit("/", 1)[-1] for n in names] == [f"{FAMILY}-{t}" for t in TASKS]


def test_members_differ_so_routing_is_visible(members):
    vs = [members[t].embed(TEXTS[1]) for t in TASKS]
    assert min(np.abs(a - b).max() for i, a in enumerate(vs) for b in vs[i + 1:]) > 1e-2
    assert members["retrieval"].pooling == "lasttoken"


@pytest.mark.parametrize("task", TASKS)
def test_task_picks_its_member_on_every_route(family, members, task):
    ref = members[task]
    # A member without retrieval's roles has a default prompt (default_prompt_name), which applies.
    prompt = None if task == "retrieval" else ref.prompts["document"]
    want = [ref.embed(t, prompt=prompt) for t in TEXTS]
    routes = (openai(family, {"input": TEXTS, "model": FAMILY, "task": task}),
              ok(family.post("/api/embed", {"input": TEXTS, "model": FAMILY, "options": {"task": task}}))["embeddings"],
              ok(family.post("/embed", {"inputs": TEXTS, "prompt_name": task})))
    for route in routes:
        assert len(route) == len(TEXTS)
        for v, w in zip(route, want):
            assert len(v) == 48
            close(v, w)


def test_query_and_document_go_to_retrieval_with_its_prompts(family, members):
    ref = members["retrieval"]
    assert ref.prompts == {"query": "Query: ", "document": "Document: "}
    want_q = [ref.embed(q, prompt="Query: ") for q in QUERIES]
    want_d = [ref.embed(t, prompt="Document: ") for t in TEXTS[:3]]
    for route in (openai(family, {"input": QUERIES, "input_type": "query"}),
                  openai(family, {"input": QUERIES, "task": "retrieval.query"}),
                  openai(family, {"input": QUERIES, "model": FAMILY, "input_type": "search_query"}),
                  openai(family, {"input": QUERIES, "task": "retrieval", "input_type": "query"}),
                  ok(family.post("/embed", {"inputs": QUERIES, "prompt_name": "query"})),
                  ok(family.post("/api/embed", {"input": QUERIES, "options": {"task": "retrieval.query"}}))["embeddings"]):
        for v, w in zip(route, want_q):
            close(v, w)
    for route in (openai(family, {"input": TEXTS[:3], "input_type": "document"}),
                  openai(family, {"input": TEXTS[:3], "task": "retrieval.passage", "dimensions": 48})):
        for v, w in zip(route, want_d):
            close(v, w)


def test_no_task_means_the_first_member_and_members_answer_by_name(family, members):
    for v, t in zip(openai(family, {"input": TEXTS[:3]}), TEXTS[:3]):
        close(v, members["retrieval"].embed(t))
    got = openai(family, {"input": TEXTS[:3], "model": f"{FAMILY}-clustering", "dimensions": 16})
    for v, t in zip(got, TEXTS[:3]):
        assert len(v) == 16
        close(v, members["clustering"].embed(t, prompt=members["clustering"].prompts["document"], dims=16))


def test_a_task_outside_the_family_is_a_400_naming_its_tasks(family):
    r = family.post("/v1/embeddings", {"input": "x", "model": FAMILY, "task": "separation"})
    assert r.status_code == 400, r.text
    assert "retrieval, text-matching, classification, clustering" in r.json()["error"]["message"]
