"""The OpenAPI document at /openapi.json, and an OpenAPI-driven fuzzer (schemathesis) against the
real server: generated requests for every operation, no 5xx, every response conforms to the
document (status, content type, schema — error bodies included).
"""

import os
import subprocess
import sys
from pathlib import Path

ROUTES = {
    "/": {"get", "post"}, "/health": {"get"}, "/metrics": {"get"}, "/openapi.json": {"get"},
    "/api/embed": {"post"}, "/api/embeddings": {"post"}, "/api/rerank": {"post"}, "/api/tags": {"get"},
    "/api/show": {"post"}, "/api/ps": {"get"}, "/api/version": {"get"}, "/v1/embeddings": {"post"},
    "/embeddings": {"post"}, "/v1/models": {"get"}, "/v1/rerank": {"post"}, "/rerank": {"post"},
    "/v2/rerank": {"post"}, "/tokenize": {"post"}, "/embed": {"post"}, "/embed_all": {"post"},
    "/similarity": {"post"}, "/decode": {"post"}, "/info": {"get"},
}


def test_document_covers_every_route_and_error_shape(jina):
    doc = jina.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {p: set(ops) for p, ops in doc["paths"].items()} == ROUTES
    schemas = doc["components"]["schemas"]
    for name in ("OllamaError", "OpenAiError", "ErrorResponse", "TeiEmbedRequest", "SpinEmbedRequest",
                 "TeiRerankRequest", "RerankRequest", "EmbeddingsRequest", "Info", "Tags"):
        assert name in schemas, name
    assert schemas["ErrorType"]["enum"] == ["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
    # Shared paths: the body decides, so both shapes are documented.
    embed = doc["paths"]["/embed"]["post"]
    refs = str(embed["requestBody"]) + str(embed["responses"])
    assert "TeiEmbedRequest" in refs and "SpinEmbedRequest" in refs and "OllamaError" in refs


def test_schemathesis_finds_no_5xx_and_no_nonconforming_response(jina, tmp_path):
    """A bounded run: a fixed seed and a few examples per operation keep it well under a minute."""
    st = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [str(st), "run", jina.url + "/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--phases", "examples,fuzzing", "--mode", "all", "--max-examples", "12", "--seed", "7",
         "--workers", "2", "--generation-database", "none", "--request-timeout", "30",
         "--suppress-health-check", "all", "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
