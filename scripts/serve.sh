#!/usr/bin/env bash
# Runs the embedfn server with every set-up step done first: fetches ONNX Runtime, builds the
# release binary, and starts it. Configure it with the environment variables in docs/configuration.md
# (EMBEDDINGS_MODEL_ID, RERANKER_MODEL_ID, PORT, …); models download on first start.
source "$(dirname "$0")/lib.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$ROOT/scripts/fetch-onnxruntime.sh")}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
cd "$ROOT"
cargo build --release --bin embedfn
exec "$CARGO_TARGET_DIR/release/embedfn" "$@"
