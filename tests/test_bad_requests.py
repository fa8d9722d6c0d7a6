"""A crafted bad-request suite: every route crossed with every class of defect (malformed and
truncated JSON, wrong types, NaN and huge numbers, empty values, invalid UTF-8, unknown models,
tasks, formats and routes, wrong methods and content types, weird paths, over-limit and oversize
bodies). Each case must get a 4xx with a JSON error in its route family's shape, and the server
must live on: no panics, no 5xx.

Bodies go out as raw bytes (`requests` with `data=`), and weird paths over `http.client` or a
plain socket, so that nothing on the client side repairs them before the server sees them.
A few requests that look odd but are legitimately accepted are kept apart (`ACCEPTED`) and must
answer 200 with a well-formed body.
"""

import http.client
import json
import math
import re
import socket
from dataclasses import dataclass, field
from typing import Optional

import pytest
import requests

# --- the routes ----------------------------------------------------------------------------------

EMBEDDER, RERANKER = "jina-embed-tiny", "jina-rerank-tiny"
EMBEDDER_WIDTH = 64  # hidden size of the jina-embed-tiny fixture (tests/fixtures/make_fixtures.py)

# A valid body per POST route (each answers 200 on the `jina` server: `test_baseline` checks it),
# so that every bad case below differs from a good request by its one defect.
VALID = {
    "/api/embed": {"model": EMBEDDER, "input": ["hello world", "second text"]},
    "/api/embeddings": {"model": EMBEDDER, "prompt": "hello world"},
    "/api/rerank": {"model": RERANKER, "query": "what is rust?", "documents": ["a language", "a fungus"]},
    "/api/show": {"model": EMBEDDER},
    "/v1/embeddings": {"model": EMBEDDER, "input": ["hello world", "second text"], "encoding_format": "float"},
    "/embeddings": {"model": EMBEDDER, "input": ["hello world", "second text"], "encoding_format": "float"},
    "/v1/rerank": {"model": RERANKER, "query": "what is rust?", "documents": ["a language", {"text": "a fungus"}],
                   "top_n": 1},
    "/rerank": {"model": RERANKER, "query": "what is rust?", "documents": ["a language", {"text": "a fungus"}],
                "top_n": 1},
    "/v2/rerank": {"model": RERANKER, "query": "what is rust?", "documents": ["a language", {"text": "a fungus"}],
                   "top_n": 1},
    "/tokenize": {"model": EMBEDDER, "input": ["hello world"], "task": "retrieval.query"},
}
POST_ROUTES = list(VALID)
GET_ROUTES = ["/", "/health", "/metrics", "/api/tags", "/api/ps", "/api/version", "/v1/models"]
OPENAI_ROUTES = {"/v1/embeddings", "/embeddings", "/v1/models", "/v1/rerank", "/rerank", "/v2/rerank", "/tokenize"}
OPENAI_EMBED = ["/v1/embeddings", "/embeddings"]
OPENAI_RERANK = ["/v1/rerank", "/rerank", "/v2/rerank"]

# The field of each route that carries its main string (where the raw-byte defects go).
MAIN = {"/api/embed": "input", "/api/embeddings": "prompt", "/api/rerank": "query", "/api/show": "model",
        "/v1/embeddings": "input", "/embeddings": "input", "/v1/rerank": "query", "/rerank": "query",
        "/v2/rerank": "query", "/tokenize": "input"}

# The body as a JSON array, filled positionally in the request struct's field order: the APIs
# take a JSON object, so each must be refused (serde's derive would otherwise accept it).
POSITIONAL = {
    "/api/embed": [EMBEDDER, "hello", None, None, None],
    "/api/embeddings": [EMBEDDER, "hello", None],
    "/api/rerank": [RERANKER, "q", ["a", "b"], None, None],
    "/api/show": [EMBEDDER, None],
    "/v1/embeddings": ["hello", EMBEDDER, None, None, None, None, None, None, None],
    "/embeddings": ["hello", EMBEDDER, None, None, None, None, None, None, None],
    "/v1/rerank": [RERANKER, "q", ["a", "b"], None, None],
    "/rerank": [RERANKER, "q", ["a", "b"], None, None],
    "/v2/rerank": [RERANKER, "q", ["a", "b"], None, None],
    "/tokenize": ["hello", EMBEDDER, None, None],
}

LONG = "word " * 700            # over the tiny models' 512-token context
DEEP = 10_000                   # nesting levels (serde_json's recursion limit is 128)
LIMITS = {"MAX_INPUTS": "4", "MAX_DOCUMENTS": "4", "MAX_BODY_BYTES": "4096"}
LIMIT_BYTES = int(LIMITS["MAX_BODY_BYTES"])


class Raw(bytes):
    """A value's raw JSON text, put into a body unchanged."""


DROP = object()  # a field left out of the body


def body(route, **fields):
    """`VALID[route]` with `fields` replaced (`DROP` removes one, `Raw` goes in as is), as bytes."""
    doc = dict(VALID[route])
    for key, value in fields.items():
        if value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    parts = [json.dumps(k).encode() + b":" + (v if isinstance(v, Raw) else json.dumps(v).encode())
             for k, v in doc.items()]
    return b"{" + b",".join(parts) + b"}"


def dumps(doc):
    return json.dumps(doc).encode()


def family(path):
    """The error shape a path answers in: its table route's, else OpenAI's under `/v1/`."""
    p = re.split(r"[?#]", path, maxsplit=1)[0]
    if len(p) > 1:
        p = p.rstrip("/")
    return "openai" if p in OPENAI_ROUTES or p.startswith("/v1/") else "ollama"


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: Optional[bytes] = None
    status: Optional[int] = 400      # None: any 4xx is defensible
    fragment: Optional[str] = None   # a piece the error message must contain
    server: str = "jina"             # fixture: jina, minilm, limited
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})
    transport: str = "requests"      # requests | http (path sent unchanged) | socket (raw bytes)
    shape: Optional[str] = "auto"    # ollama | openai | None (either) | auto (from the path)
    # The HTTP library (hyper) answers requests it cannot parse before the route table sees
    # them (a URI over 64 KiB, invalid bytes in the request line): a 4xx with an empty body.
    http_layer: bool = False


CASES = []


def add(*a, **kw):
    CASES.append(Case(*a, **kw))


# --- 1. syntax: malformed, truncated, not-an-object, raw bytes, encodings (every POST route) -------

def utf8_string(raw):
    return Raw(b'"ok ' + raw + b' ok"')


for route in POST_ROUTES:
    r = route.strip("/").replace("/", "_")
    valid = dumps(VALID[route])
    main = MAIN[route]
    add(f"{r}-empty-body", "POST", route, b"", fragment="empty")
    add(f"{r}-whitespace-body", "POST", route, b" \r\n\t ", fragment="empty")
    cuts = sorted({1, 2, len(valid) // 4, len(valid) // 2, 3 * len(valid) // 4, len(valid) - 1})
    for n in cuts:
        add(f"{r}-truncated-at-{n}-of-{len(valid)}", "POST", route, valid[:n], fragment="invalid request body")
    add(f"{r}-truncated-mid-escape", "POST", route, body(route, **{main: Raw(b'"abc\\u00')}))
    add(f"{r}-unterminated-string", "POST", route, body(route, **{main: Raw(b'"abc')}))
    for name, raw in [("null", b"null"), ("empty-array", b"[]"), ("string", b'"hello"'), ("number", b"42"),
                      ("bool", b"true")]:
        add(f"{r}-top-level-{name}", "POST", route, raw, fragment="invalid request body")
    add(f"{r}-top-level-positional-array", "POST", route, dumps(POSITIONAL[route]))
    add(f"{r}-single-quotes", "POST", route, valid.replace(b'"', b"'"))
    add(f"{r}-unquoted-keys", "POST", route, re.sub(rb'"(\w+)":', rb"\1:", valid))
    add(f"{r}-trailing-comma", "POST", route, valid[:-1] + b",}")
    add(f"{r}-comment", "POST", route, b"{/* comment */" + valid[1:])
    add(f"{r}-trailing-garbage", "POST", route, valid + b" garbage")
    add(f"{r}-two-objects", "POST", route, valid + valid)
    add(f"{r}-duplicate-key", "POST", route, valid[:-1] + b"," + dumps(main) + b":" + dumps(VALID[route][main]) + b"}")
    add(f"{r}-bom", "POST", route, b"\xef\xbb\xbf" + valid, status=None)
    add(f"{r}-utf16-body", "POST", route, json.dumps(VALID[route]).encode("utf-16"),
        headers={"Content-Type": "application/json; charset=utf-16"})
    for name, raw in [("nan", b"NaN"), ("infinity", b"Infinity"), ("minus-infinity", b"-Infinity"),
                      ("python-none", b"None"), ("undefined", b"undefined"), ("huge-number-1e400", b"1e400"),
                      ("hex-number", b"0x10")]:
        add(f"{r}-{main}-{name}", "POST", route, body(route, **{main: Raw(raw)}))
    for name, raw in [("invalid-utf8", b"\xff\xfe"), ("overlong-utf8", b"\xc0\xaf"),
                      ("utf8-encoded-surrogate", b"\xed\xa0\x80"), ("lone-continuation-byte", b"\x80"),
                      ("truncated-utf8-sequence", b"\xe4\xbd"), ("raw-nul", b"\x00"), ("raw-control-char", b"\x01"),
                      ("raw-newline", b"\n")]:
        add(f"{r}-{main}-{name}", "POST", route, body(route, **{main: utf8_string(raw)}))
    for name, raw in [("lone-leading-surrogate", b"\\ud800"), ("lone-trailing-surrogate", b"\\udc00"),
                      ("reversed-surrogates", b"\\udc00\\ud800"), ("bad-escape", b"\\q"),
                      ("short-unicode-escape", b"\\u12")]:
        add(f"{r}-{main}-{name}-escape", "POST", route, body(route, **{main: utf8_string(raw)}))
    add(f"{r}-body-deep-array", "POST", route, b"[" * DEEP + b"]" * DEEP)
    add(f"{r}-body-deep-array-unclosed", "POST", route, b"[" * (10 * DEEP))
    add(f"{r}-{main}-deep-array", "POST", route, body(route, **{main: Raw(b"[" * DEEP + b'"x"' + b"]" * DEEP)}))
    add(f"{r}-{main}-deep-object", "POST", route,
        body(route, **{main: Raw(b'{"a":' * DEEP + b"1" + b"}" * DEEP)}))
    for name, ctype, raw in [
        ("form-urlencoded", "application/x-www-form-urlencoded", f"{main}=hello+world".encode()),
        ("multipart", "multipart/form-data; boundary=XyZ",
         f'--XyZ\r\nContent-Disposition: form-data; name="{main}"\r\n\r\nhello\r\n--XyZ--\r\n'.encode()),
        ("xml", "application/xml", f"<{main}>hello</{main}>".encode()),
        ("text-plain", "text/plain", b"hello world"),
        ("msgpack", "application/msgpack", b"\x81\xa5input\xa5hello"),
        ("octet-stream", "application/octet-stream", bytes(range(256))),
    ]:
        add(f"{r}-content-type-{name}", "POST", route, raw, status=415, fragment="application/json",
            headers={"Content-Type": ctype})
    # A JSON body declared as a form (curl -d's default) or as text is refused the same way:
    # browsers send those without a preflight, so accepting them would let any page post here.
    for name, ctype in [("form", "application/x-www-form-urlencoded"), ("text", "text/plain")]:
        add(f"{r}-json-body-as-{name}", "POST", route, valid, status=415, fragment="application/json",
            headers={"Content-Type": ctype})

# --- 2. wrong types, bad values, empty values, unknown models/tasks/formats (per route) ------------

NOT_FOUND = 404

route = "/api/embed"
for name, value, frag in [
    ("number", 5, "must be a string or an array of strings"), ("float", 1.5, None), ("bool", True, None),
    ("object", {"text": "x"}, None), ("token-ids", [1, 2], None), ("token-id-lists", [[1, 2]], None),
    ("mixed", ["ok", 3], None), ("null-item", ["ok", None], None), ("nested-strings", [["a"]], None),
    ("empty-list", [], "must not be empty"), ("null", None, "'input' is required"),
    ("missing", DROP, "'input' is required"),
]:
    add(f"api_embed-input-{name}", "POST", route, body(route, input=value), fragment=frag)
for name, value in [("zero", 0), ("over-width", EMBEDDER_WIDTH + 1), ("1e12", 10**12), ("negative", -1), ("2-pow-64", 2**64),
                    ("float", 8.5), ("float-integral", Raw(b"8.0")), ("exponent", Raw(b"1e2")),
                    ("negative-zero", Raw(b"-0")), ("leading-zero", Raw(b"08")), ("plus-sign", Raw(b"+8")),
                    ("string", "8"), ("bool", True), ("list", [8]), ("1e400", Raw(b"1e400")),
                    ("nan", Raw(b"NaN"))]:
    add(f"api_embed-dimensions-{name}", "POST", route, body(route, dimensions=value))
for name, value in [("string", "yes"), ("number", 1), ("list", [True])]:
    add(f"api_embed-truncate-{name}", "POST", route, body(route, truncate=value))
add("api_embed-over-context-no-truncate", "POST", route, body(route, input=LONG, truncate=False),
    fragment="exceeds the context length")
for name, value, frag in [
    ("list", [1], None), ("string", "retrieval.query", None), ("number", 5, None),
    ("task-unknown", {"task": "poetry"}, "valid tasks are"), ("task-empty", {"task": ""}, "unknown task"),
    ("task-case", {"task": "Retrieval.Query"}, "unknown task"), ("task-number", {"task": 3}, "options.task"),
    ("task-list", {"task": ["retrieval.query"]}, "options.task"), ("task-object", {"task": {"a": 1}}, None),
    ("deep", Raw(b'{"a":' * DEEP + b"1" + b"}" * DEEP), None),
]:
    add(f"api_embed-options-{name}", "POST", route, body(route, options=value), fragment=frag)
for name, value in [("number", 5), ("list", [EMBEDDER]), ("object", {}), ("bool", True)]:
    add(f"api_embed-model-{name}", "POST", route, body(route, model=value))
for name, value in [("unknown", "nope"), ("reranker", RERANKER), ("unknown-suffix", f"{EMBEDDER}-poetry"),
                    ("extra-char-suffix", f"{EMBEDDER}x"), ("long", "m" * 5000), ("nul", "\u0000"),
                    ("only-tag", ":latest")]:
    add(f"api_embed-model-{name}", "POST", route, body(route, model=value), status=NOT_FOUND,
        fragment="not found")

route = "/api/embeddings"
for name, value in [("number", 7), ("list", ["a"]), ("object", {}), ("bool", True), ("1e400", Raw(b"1e400"))]:
    add(f"api_embeddings-prompt-{name}", "POST", route, body(route, prompt=value), fragment="invalid request body")
for name, value in [("number", 5), ("list", [EMBEDDER])]:
    add(f"api_embeddings-model-{name}", "POST", route, body(route, model=value))
for name, value in [("unknown", "nope"), ("reranker", RERANKER)]:
    add(f"api_embeddings-model-{name}", "POST", route, body(route, model=value), status=NOT_FOUND)
add("api_embeddings-model-unknown-empty-prompt", "POST", route, body(route, model="nope", prompt=""),
    status=NOT_FOUND)
for name, value, frag in [("string", "x", None), ("task-unknown", {"task": "poetry"}, "valid tasks are"),
                          ("task-number", {"task": 5}, "options.task")]:
    add(f"api_embeddings-options-{name}", "POST", route, body(route, options=value), fragment=frag)

RERANK_FIELD_CASES = [
    # (name, fields, status, fragment)
    ("query-missing", {"query": DROP}, 400, "'query' is required"),
    ("query-null", {"query": None}, 400, "'query' is required"),
    ("query-number", {"query": 5}, 400, None),
    ("query-list", {"query": ["q"]}, 400, None),
    ("query-object", {"query": {"text": "q"}}, 400, None),
    ("documents-missing", {"documents": DROP}, 400, "documents"),
    ("documents-null", {"documents": None}, 400, "documents"),
    ("documents-empty", {"documents": []}, 400, "documents"),
    ("documents-string", {"documents": "a language"}, 400, None),
    ("documents-object", {"documents": {"text": "a"}}, 400, None),
    ("documents-numbers", {"documents": [1, 2]}, 400, None),
    ("documents-null-item", {"documents": ["a", None]}, 400, None),
    ("documents-nested-lists", {"documents": [["a"]]}, 400, None),
    ("documents-object-text-number", {"documents": [{"text": 1}]}, 400, None),
    ("documents-object-without-text", {"documents": [{"txt": "a"}]}, 400, None),
    ("documents-empty-object", {"documents": [{}]}, 400, None),
    ("top_n-zero", {"top_n": 0}, 400, "top_n"),
    ("top_n-negative", {"top_n": -1}, 400, None),
    ("top_n-2-pow-64", {"top_n": 2**64}, 400, None),
    ("top_n-float", {"top_n": 1.5}, 400, None),
    ("top_n-string", {"top_n": "1"}, 400, None),
    ("top_n-bool", {"top_n": True}, 400, None),
    ("top_n-1e400", {"top_n": Raw(b"1e400")}, 400, None),
    ("top_n-nan", {"top_n": Raw(b"NaN")}, 400, None),
    ("top_n-infinity", {"top_n": Raw(b"Infinity")}, 400, None),
    ("return_documents-string", {"return_documents": "no"}, 400, None),
    ("return_documents-number", {"return_documents": 0}, 400, None),
    ("model-number", {"model": 5}, 400, None),
    ("model-list", {"model": [RERANKER]}, 400, None),
    ("model-unknown", {"model": "nope"}, 404, "not found"),
    ("model-embedder", {"model": EMBEDDER}, 404, "not found"),
    ("model-task-suffix", {"model": f"{RERANKER}-query"}, 404, "not found"),
]
for route in ["/api/rerank"] + OPENAI_RERANK:
    r = route.strip("/").replace("/", "_")
    for name, fields, status, frag in RERANK_FIELD_CASES:
        add(f"{r}-{name}", "POST", route, body(route, **fields), status=status, fragment=frag)
# The seed shape takes documents as strings only.
add("api_rerank-documents-text-objects", "POST", "/api/rerank", body("/api/rerank", documents=[{"text": "a"}]))

route = "/api/show"
for name, doc, status in [
    ("empty-object", {}, 400), ("model-null", {"model": None}, 400), ("model-number", {"model": 5}, 400),
    ("model-list", {"model": []}, 400), ("model-object", {"model": {}}, 400), ("name-number", {"name": 5}, 400),
    ("model-unknown", {"model": "nope"}, 404), ("model-empty", {"model": ""}, 404),
    ("name-unknown", {"name": "nope"}, 404), ("model-path-traversal", {"model": "../../nope"}, 404),
    ("model-reranker-task-suffix", {"model": f"{RERANKER}-query"}, 404),
    ("model-unknown-suffix", {"model": f"{EMBEDDER}-poetry"}, 404),
]:
    add(f"api_show-{name}", "POST", route, dumps(doc), status=status)

INPUT_CASES = [
    # (name, input, status, fragment) for the OpenAI-shaped `input` (/v1/embeddings, /embeddings, /tokenize)
    ("number", 5, 400, "'input' must be"),
    ("float", 1.5, 400, None),
    ("bool", True, 400, None),
    ("object", {"text": "x"}, 400, None),
    ("null", None, 400, "'input' is required"),
    ("missing", DROP, 400, "'input' is required"),
    ("empty-list", [], 400, "must not be empty"),
    ("empty-token-list", [[]], 400, "must not be empty"),
    ("some-empty-token-list", [[1, 2], []], 400, "must not be empty"),
    ("ids-then-string", [1, "a"], 400, None),
    ("float-id", [1.5], 400, None),
    ("integral-float-id", Raw(b"[1.0]"), 400, None),
    ("negative-id", [-1], 400, "outside the vocabulary"),
    ("id-equal-vocab-size", [830], 400, "outside the vocabulary"),
    ("id-i64-max", [2**63 - 1], 400, "outside the vocabulary"),
    ("id-i64-min", [-(2**63)], 400, "outside the vocabulary"),
    ("id-over-i64", [2**63], 400, None),
    ("id-over-u64", [2**64], 400, None),
    ("id-1e400", Raw(b"[1e400]"), 400, None),
    ("id-nan", Raw(b"[NaN]"), 400, None),
    ("id-bool", [1, True], 400, None),
    ("id-null", [1, None], 400, None),
    ("id-lists-then-string", [[1], "a"], 400, None),
    ("id-lists-float", [[1], [2.5]], 400, None),
    ("id-lists-negative", [[1], [-7]], 400, "outside the vocabulary"),
    ("id-lists-over-vocab", [[1], [99999]], 400, "outside the vocabulary"),
    ("strings-then-ids", ["a", [1]], 400, None),
    ("triple-nested", [[[1]]], 400, None),
    ("null-item", [None], 400, None),
    ("object-items", [{"text": "a"}], 400, None),
    ("deep", Raw(b"[" * DEEP + b"1" + b"]" * DEEP), 400, None),
]
for route in OPENAI_EMBED + ["/tokenize"]:
    r = route.strip("/").replace("/", "_")
    for name, value, status, frag in INPUT_CASES:
        add(f"{r}-input-{name}", "POST", route, body(route, input=value), status=status, fragment=frag)
    for name, value in [("unknown", "poetry"), ("empty", ""), ("trailing-space", "retrieval.query "),
                        ("case", "RETRIEVAL.QUERY")]:
        add(f"{r}-task-{name}", "POST", route, body(route, task=value), fragment="unknown task")
    for name, value in [("number", 5), ("list", ["retrieval.query"]), ("object", {})]:
        add(f"{r}-task-{name}", "POST", route, body(route, task=value), fragment="invalid request body")
    for name, value in [("number", 5), ("list", [EMBEDDER])]:
        add(f"{r}-model-{name}", "POST", route, body(route, model=value))
    for name, value in [("unknown", "nope"), ("reranker", RERANKER), ("unknown-suffix", f"{EMBEDDER}-poetry")]:
        add(f"{r}-model-{name}", "POST", route, body(route, model=value), status=NOT_FOUND, fragment="not found")
    add(f"{r}-truncate-string", "POST", route, body(route, truncate="no"))
    add(f"{r}-over-context-no-truncate", "POST", route, body(route, input=LONG, truncate=False),
        fragment="exceeds the context length")
    add(f"{r}-over-context-token-ids-no-truncate", "POST", route, body(route, input=[5] * 600, truncate=False),
        fragment="exceeds the context length")

for route in OPENAI_EMBED:
    r = route.strip("/").replace("/", "_")
    for key in ["encoding_format", "embedding_type"]:
        for name, value in [("unknown", "int4"), ("empty", ""), ("case", "BASE64")]:
            add(f"{r}-{key}-{name}", "POST", route, body(route, **{key: value}), fragment="unknown encoding format")
        for name, value in [("number", 5), ("list", ["float"])]:
            add(f"{r}-{key}-{name}", "POST", route, body(route, **{key: value}))
    for name, value in [("zero", 0), ("over-width", EMBEDDER_WIDTH + 1), ("1e12", 10**12), ("negative", -1), ("2-pow-64", 2**64),
                        ("float", 8.5), ("string", "8"), ("1e400", Raw(b"1e400")), ("infinity", Raw(b"Infinity"))]:
        add(f"{r}-dimensions-{name}", "POST", route, body(route, dimensions=value))
    for key in ["late_chunking", "normalized"]:
        for name, value in [("string", "true"), ("number", 1)]:
            add(f"{r}-{key}-{name}", "POST", route, body(route, **{key: value}))
    add(f"{r}-late-chunking-token-ids", "POST", route, body(route, input=[[1, 2], [3]], late_chunking=True),
        fragment="late_chunking")
    add(f"{r}-late-chunking-over-context", "POST", route, body(route, input=[LONG, LONG], late_chunking=True),
        fragment="late_chunking")

# The MiniLM server: no reranker, no task adapters, its own vocabulary and width.
MINI = [
    ("api_rerank-no-reranker", "/api/rerank", {"query": "q", "documents": ["d"]}, 404, "RERANKER_MODEL_ID=none"),
    ("v1_rerank-no-reranker", "/v1/rerank", {"query": "q", "documents": ["d"]}, 404, "RERANKER_MODEL_ID=none"),
    ("rerank-no-reranker", "/rerank", {"query": "q", "documents": ["d"]}, 404, "RERANKER_MODEL_ID=none"),
    ("v2_rerank-no-reranker", "/v2/rerank", {"query": "q", "documents": ["d"]}, 404, "RERANKER_MODEL_ID=none"),
    ("api_embed-task-without-adapters", "/api/embed", {"input": "x", "options": {"task": "retrieval.query"}}, 400,
     "no task adapters"),
    ("v1_embeddings-task-without-adapters", "/v1/embeddings", {"input": "x", "task": "retrieval.passage"}, 400,
     "no task adapters"),
    ("tokenize-task-without-adapters", "/tokenize", {"input": "x", "task": "separation"}, 400, "no task adapters"),
    ("api_embed-task-suffix-without-adapters", "/api/embed", {"input": "x", "model": "minilm-query"}, 404,
     "not found"),
    ("v1_embeddings-id-equal-vocab-size", "/v1/embeddings", {"input": [30522]}, 400, "outside the vocabulary"),
    ("v1_embeddings-dimensions-over-width", "/v1/embeddings", {"input": "x", "dimensions": 385}, 400, "dimensions"),
    ("api_show-other-servers-model", "/api/show", {"model": EMBEDDER}, 404, "not found"),
    ("api_embed-other-servers-model", "/api/embed", {"input": "x", "model": EMBEDDER}, 404, "not found"),
]
for name, route, doc, status, frag in MINI:
    add(f"minilm-{name}", "POST", route, dumps(doc), status=status, fragment=frag, server="minilm")

# --- 3. methods ------------------------------------------------------------------------------------

for route in POST_ROUTES:
    r = route.strip("/").replace("/", "_")
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]:
        add(f"{r}-method-{method}", method, route, None, status=405, fragment="not allowed")
add("api_embed-method-TRACE", "TRACE", "/api/embed", None, status=405, fragment="not allowed")
add("api_embed-method-custom", "FROBNICATE", "/api/embed", dumps(VALID["/api/embed"]), status=405,
    fragment="not allowed")
add("v1_embeddings-method-lowercase-post", "post", "/v1/embeddings", dumps(VALID["/v1/embeddings"]),
    status=405, fragment="not allowed", transport="http")
for route in GET_ROUTES:
    r = route.strip("/").replace("/", "_") or "root"
    # `POST /` is TEI's root route (tests/test_tei.py), so `/` only refuses PUT and DELETE.
    for method in ["PUT", "DELETE"] if route == "/" else ["POST", "PUT", "DELETE"]:
        add(f"{r}-method-{method}", method, route, b"{}", status=405, fragment="not allowed")

# --- 4. unknown routes -----------------------------------------------------------------------------

UNKNOWN = ["/nope", "/api/nope", "/v1/nope", "/v2/embeddings", "/v1/embed", "/api/embedding", "/api/embeds",
           "/api/embed/extra", "/v1/embeddings/extra", "/api", "/v1", "/v2", "/tokenizer", "/v1/tokenize",
           "/api/tokenize", "/API/EMBED", "/V1/EMBEDDINGS", "/v1/Rerank", "/index.html", "/favicon.ico",
           "/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions", "/.env", "/healthz"]
for path in UNKNOWN:
    name = path.strip("/").replace("/", "_").replace(".", "dot") or "root"
    add(f"unknown-{name}-POST", "POST", path, dumps({"input": "x"}), status=404, fragment="no route")
    add(f"unknown-{name}-GET", "GET", path, None, status=404, fragment="no route")

# --- 5. weird paths (sent unchanged: http.client does not normalise them) --------------------------

# Paths that only look like a route: the server may resolve them to it (the bad body then gives
# 400) or not (404); either way a 4xx, never a 5xx or a 200.
for name, path in [
    ("dot-dot-segment", "/api/../api/embed"), ("dot-segment", "/./api/embed"), ("leading-double-slash", "//api/embed"),
    ("inner-double-slash", "/api//embed"), ("v1-double-slash", "/v1//embeddings"),
    ("percent-encoded-letter", "/api/%65mbed"), ("percent-encoded-slash", "/api%2Fembed"),
    ("percent-encoded-dots", "/%2e%2e/api/embed"), ("percent-encoded-nul", "/api/embed%00"),
    ("percent-encoded-space", "/api/embed%20"), ("matrix-param", "/api/embed;x=1"),
    ("trailing-dot", "/api/embed."), ("backslash", "/api\\embed"), ("many-trailing-slashes", "/api/embed////"),
]:
    add(f"path-{name}-bad-body", "POST", path, b"{", status=None, transport="http", shape=None)
for name, path in [
    ("root-traversal", "/../../etc/passwd"), ("encoded-traversal", "/%2e%2e/%2e%2e/etc/passwd"),
    ("double-slash", "//"), ("triple-slash", "///"), ("lone-percent", "/%"), ("bad-percent", "/%zz"),
    ("encoded-invalid-utf8", "/%ff%fe"), ("encoded-nul", "/%00"), ("asterisk", "*"),
    ("long-path-60k", "/" + "a" * 60_000), ("long-query", "/nope?" + "a=b&" * 5_000),
    ("query-invalid-utf8", "/nope?x=%ff"), ("fragment-like", "/nope%23frag"),
]:
    add(f"path-{name}", "GET", path, None, status=404, transport="http")
add("path-long-path-70k", "GET", "/" + "a" * 70_000, None, status=414, transport="http", http_layer=True)
add("path-raw-utf8", "GET", "/\u00e9t\u00e9".encode(), None, status=404, transport="socket")
add("path-raw-invalid-utf8", "GET", b"/\xff\xfe", None, status=400, transport="socket", http_layer=True)

# --- 6. limits: a dedicated server with MAX_INPUTS=4, MAX_DOCUMENTS=4, MAX_BODY_BYTES=4096 ---------

for route in ["/api/embed"] + OPENAI_EMBED + ["/tokenize"]:
    r = route.strip("/").replace("/", "_")
    add(f"limited-{r}-five-inputs", "POST", route, body(route, input=["a"] * 5), fragment="too many inputs",
        server="limited")
    if route != "/api/embed":
        add(f"limited-{r}-five-token-lists", "POST", route, body(route, input=[[5]] * 5),
            fragment="too many inputs", server="limited")
for route in ["/api/rerank"] + OPENAI_RERANK:
    r = route.strip("/").replace("/", "_")
    add(f"limited-{r}-five-documents", "POST", route, body(route, documents=["d"] * 5),
        fragment="too many documents", server="limited")


def oversize(route, size=LIMIT_BYTES + 1):
    """A valid body for `route` padded (inside its main string) to exactly `size` bytes."""
    small = body(route, **{MAIN[route]: ""})
    return body(route, **{MAIN[route]: "x" * (size - len(small))})


for route in POST_ROUTES:
    r = route.strip("/").replace("/", "_")
    big = oversize(route)
    assert len(big) == LIMIT_BYTES + 1
    add(f"limited-{r}-oversize-by-one", "POST", route, big, status=413, fragment="larger than the limit",
        server="limited")
    add(f"limited-{r}-oversize-1mb", "POST", route, oversize(route, 1 << 20), status=413,
        fragment="larger than the limit", server="limited")
add("limited-oversize-whitespace", "POST", "/api/embed", b" " * (2 * LIMIT_BYTES), status=413, server="limited")
add("limited-oversize-malformed", "POST", "/v1/embeddings", b"{" * (2 * LIMIT_BYTES), status=413, server="limited")
add("limited-oversize-deep", "POST", "/v1/rerank", b"[" * (2 * LIMIT_BYTES), status=413, server="limited")
add("limited-oversize-invalid-utf8", "POST", "/api/embed", b"\xff" * (2 * LIMIT_BYTES), status=413,
    server="limited")
# Two defects at once: either is a fine answer, but it must be a 4xx.
add("limited-oversize-on-get-route", "GET", "/api/tags", b"x" * (2 * LIMIT_BYTES), status=None, server="limited")
add("limited-oversize-wrong-method", "PUT", "/api/embed", b"x" * (2 * LIMIT_BYTES), status=None, server="limited")
add("limited-oversize-unknown-route", "POST", "/nope", b"x" * (2 * LIMIT_BYTES), status=None, server="limited")
add("limited-oversize-unknown-v1-route", "POST", "/v1/nope", b"x" * (2 * LIMIT_BYTES), status=None,
    server="limited")

IDS = [c.id for c in CASES]
assert len(IDS) == len(set(IDS)), [i for i in IDS if IDS.count(i) > 1]


# --- the harness -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited(start, models_dir):
    server = start(EMBEDDINGS_MODEL_ID=str(models_dir / EMBEDDER), RERANKER_MODEL_ID=str(models_dir / RERANKER),
                   **LIMITS)
    yield server
    server.stop()


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


def send(server, case):
    """Sends the case; returns the status, lower-cased headers and body bytes."""
    if case.transport == "requests":
        r = requests.request(case.method, server.url + case.path, data=case.body, headers=case.headers, timeout=30)
        return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
    if case.transport == "http":
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request(case.method, case.path, body=case.body, headers=case.headers)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()
    # socket: the request line's bytes exactly as given
    head = case.method.encode() + b" " + case.path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    payload = case.body or b""
    head += b"Content-Length: %d\r\n\r\n" % len(payload)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + payload)
        resp = http.client.HTTPResponse(sock, method=case.method)
        resp.begin()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def describe(case, answer):
    shown = case.body if case.body is None or len(case.body) <= 200 else case.body[:200] + b"..."
    path = case.path if len(case.path) <= 120 else case.path[:120] + "..."
    return (f"\n  request: {case.method} {path!r} body={shown!r} headers={case.headers}"
            f"\n  answer:  {answer.status} {answer.headers.get('content-type')!r} {answer.text[:400]!r}")


def check_error(case, answer):
    """4xx with the expected status and a JSON error in the route family's shape."""
    why = describe(case, answer)
    assert answer.status < 500, "server error" + why
    assert answer.status != 200, "accepted a bad request" + why
    if case.status is None:
        assert 400 <= answer.status < 500, why
    else:
        assert answer.status == case.status, why
    if case.method.upper() == "HEAD" or case.http_layer:
        assert answer.body == b"", "answer has a body" + why
        return
    assert answer.headers.get("content-type", "").startswith("application/json"), "not JSON" + why
    try:
        doc = json.loads(answer.body)
    except ValueError:
        pytest.fail("body is not JSON" + why)
    path = case.path if isinstance(case.path, str) else case.path.decode("latin-1")
    shape = family(path) if case.shape == "auto" else case.shape
    assert isinstance(doc, dict) and set(doc) == {"error"}, why
    err = doc["error"]
    if shape is None:
        shape = "openai" if isinstance(err, dict) else "ollama"
    if shape == "ollama":
        assert isinstance(err, str), "expected Ollama's {\"error\": str}" + why
        message = err
    else:
        assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, \
            "expected OpenAI's {\"error\": {message, type, param, code}}" + why
        message = err["message"]
        expected_type = {404: "not_found_error", 401: "authentication_error"}.get(answer.status,
                                                                                  "invalid_request_error")
        assert err["type"] == expected_type, why
        if answer.status == 413:
            assert err["code"] == "payload_too_large", why
    assert isinstance(message, str) and message.strip(), "empty message" + why
    if case.fragment:
        assert case.fragment in message, why


def alive(server):
    assert server.proc.poll() is None, f"embedfn exited with {server.proc.returncode}"
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_request(request, case):
    server = request.getfixturevalue(case.server)
    try:
        answer = send(server, case)
    except requests.ConnectionError as e:
        alive(server)
        pytest.fail(f"connection failed: {e}\n  request: {case.method} {case.path[:120]!r}")
    try:
        check_error(case, answer)
    finally:
        alive(server)


# --- odd but legitimate: these are accepted ---------------------------------------------------------

def is_vector(v, width=None):
    return (isinstance(v, list) and v and all(isinstance(x, float) and math.isfinite(x) for x in v)
            and (width is None or len(v) == width))


def embed_ok(doc, n):
    return isinstance(doc.get("embeddings"), list) and len(doc["embeddings"]) == n and \
        all(is_vector(v) for v in doc["embeddings"])


def openai_ok(doc, n):
    return doc.get("object") == "list" and len(doc.get("data", [])) == n and \
        all(is_vector(d["embedding"]) for d in doc["data"])


def rerank_ok(doc, n):
    results = doc.get("results")
    return isinstance(results, list) and len(results) == n and \
        sorted(r["index"] for r in results) == list(range(n)) and \
        all(0.0 <= r["relevance_score"] <= 1.0 for r in results)


ACCEPTED = [
    # (id, server, method, path, body, headers, check of the parsed reply)
    ("json-with-charset", "jina", "/api/embed", dumps({"input": "x"}),
     {"Content-Type": "application/json; charset=utf-8"}, lambda d: embed_ok(d, 1)),
    ("json-suffix-type", "jina", "/api/embed", dumps({"input": "x"}), {"Content-Type": "application/vnd.api+json"},
     lambda d: embed_ok(d, 1)),
    ("no-content-type", "jina", "/v1/embeddings", dumps({"input": "x"}), {}, lambda d: openai_ok(d, 1)),
    ("legacy-empty-prompt-gives-empty-vector", "jina", "/api/embeddings", dumps({"prompt": ""}), None,
     lambda d: d == {"embedding": []}),
    ("ollama-empty-string-input", "jina", "/api/embed", dumps({"input": ""}), None, lambda d: embed_ok(d, 1)),
    ("escaped-nul-in-text", "jina", "/api/embed", b'{"input": "a\\u0000b"}', None, lambda d: embed_ok(d, 1)),
    ("blank-model-means-served", "jina", "/v1/embeddings", dumps({"input": "x", "model": "  "}), None,
     lambda d: openai_ok(d, 1)),
    ("top_n-over-document-count", "jina", "/v1/rerank", dumps({"query": "q", "documents": ["a", "b"], "top_n": 100}),
     None, lambda d: rerank_ok(d, 2)),
    ("unknown-fields-ignored", "jina", "/v1/embeddings",
     dumps({"input": "x", "user": "me", "extra": {"a": [1, 2]}}), None, lambda d: openai_ok(d, 1)),
    ("deeply-nested-unknown-field-ignored", "jina", "/api/embed",
     b'{"input": "x", "extra": ' + b"[" * DEEP + b"]" * DEEP + b"}", None, lambda d: embed_ok(d, 1)),
    ("trailing-slash-and-query", "jina", "/api/embed/?x=%ff", dumps({"input": "x"}), None,
     lambda d: embed_ok(d, 1)),
    ("limited-body-exactly-at-limit", "limited", "/api/embed", oversize("/api/embed", LIMIT_BYTES), None,
     lambda d: embed_ok(d, 1)),
    ("limited-inputs-at-limit", "limited", "/v1/embeddings", dumps({"input": ["a"] * 4}), None,
     lambda d: openai_ok(d, 4)),
    ("limited-documents-at-limit", "limited", "/v2/rerank", dumps({"query": "q", "documents": ["d"] * 4}), None,
     lambda d: rerank_ok(d, 4)),
]


@pytest.mark.parametrize("name,server_name,path,raw,headers,check", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted(request, name, server_name, path, raw, headers, check):
    server = request.getfixturevalue(server_name)
    headers = {"Content-Type": "application/json"} if headers is None else headers
    r = requests.post(server.url + path, data=raw, headers=headers, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text[:400])
    assert r.headers["content-type"].startswith("application/json")
    assert check(r.json()), r.text[:400]
    alive(server)


@pytest.mark.parametrize("route", POST_ROUTES)
def test_baseline(jina, route):
    """The valid body every bad case is derived from answers 200."""
    r = requests.post(jina.url + route, data=dumps(VALID[route]), headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == 200, r.text[:400]


@pytest.mark.parametrize("server_name", ["jina", "minilm", "limited"])
def test_still_serving_after_all_cases(request, server_name):
    """Last: every server that took bad requests still answers a valid embed."""
    server = request.getfixturevalue(server_name)
    assert server.proc.poll() is None
    r = requests.post(server.url + "/api/embed", json={"input": ["still", "alive"]}, timeout=30)
    assert r.status_code == 200, r.text[:400]
    assert embed_ok(r.json(), 2)
