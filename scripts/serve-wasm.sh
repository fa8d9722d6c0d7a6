#!/usr/bin/env bash
# Runs the Wasm component under embedfn-host with every set-up step done first: fetches ONNX
# Runtime, builds the component (wasm32-wasip2) and the host, and serves the models configured
# as for the native server (EMBEDDINGS_MODEL_ID, RERANKER_MODEL_ID: local directories or hub ids,
# downloaded on first start), pre-initialised (--snapshot). Extra arguments go to embedfn-host
# (e.g. --graph NAME=DIR, --listen ADDR).
source "$(dirname "$0")/lib.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$ROOT/scripts/fetch-onnxruntime.sh")}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
cd "$ROOT"
component="$(scripts/build-component.sh wasi-nn)"
cargo build --release
exec "$CARGO_TARGET_DIR/release/embedfn-host" "$component" --snapshot "$@"
