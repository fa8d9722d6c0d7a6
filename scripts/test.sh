#!/usr/bin/env bash
# The test command: does all set-up on a fresh machine (ONNX Runtime, test models, Python venv,
# the wasm32-wasip2 target), then runs formatting and lint checks, the Rust tests, the core's
# Wasm build, and the end-to-end suite against the real release binary.
# Builds go to $CARGO_TARGET_DIR, by default under the user's cache directory, so a fresh clone
# reuses an earlier build.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"

ensure_venv
ORT_DYLIB_PATH="$(scripts/fetch-onnxruntime.sh)"; export ORT_DYLIB_PATH
EMBEDFN_MODELS="$(scripts/fetch-test-models.sh)"; export EMBEDFN_MODELS
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

log "template.yaml (cfn-lint)"
"$VENV/bin/cfn-lint" template.yaml
log "cargo fmt / clippy"
cargo fmt --all --check
# Every native cargo command here, and in serve.sh and bench.sh, selects the workspace's
# default members (no -p): one resolution of the dependencies' features, so each command reuses
# what the one before compiled. --release everywhere: the tests reuse the release build's
# dependencies (a debug build of Wasmtime, tract and the rest would be a second full compile).
cargo clippy --release --all-targets -- -D warnings
cargo clippy -p embedfn-spin --target wasm32-wasip2 --profile wasm -- -D warnings
cargo clippy -p embedfn-spin --target wasm32-wasip2 --profile wasm --no-default-features --features tract -- -D warnings
log "release builds: embedfn, embedfn-host, the embedfn-spin component (tract and wasi-nn builds)"
cargo build --release
scripts/build-component.sh tract >/dev/null
scripts/build-component.sh wasi-nn >/dev/null
log "embedfn-core for wasm32-wasip2 (no I/O, no ort)"
cargo build -p embedfn-core --target wasm32-wasip2 --profile wasm
log "Rust tests (core, engines, adapters; the tract engine's natively)"
cargo test --release
log "the tract engine's tests as Wasm (simd128, relaxed-simd) under wasmtime"
wasmtime="$("$PY" -c 'import wasmtime_cli, pathlib; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')"
chmod +x "$wasmtime"
# The dev profile: a wasm32 debug build of tract once, then only this crate per change.
CARGO_TARGET_WASM32_WASIP2_RUNNER="$wasmtime run -S http=y -S cli=y" \
  cargo test --target wasm32-wasip2 -p embedfn-tract
log "embedfn for aarch64 (cross build; tests/test_arm64.py runs it under qemu-aarch64)"
EMBEDFN_ARM64_BIN="$(scripts/build-arm64.sh arm64-test)"; export EMBEDFN_ARM64_BIN
export EMBEDFN_ARM64_LAYERS="$EMBEDFN_CACHE/lambda-arm64"
LAMBDA_LAYERS_DIR="$EMBEDFN_ARM64_LAYERS" scripts/lambda-layers.sh arm64 "$EMBEDFN_MODELS"/{minilm,jina-rerank-tiny}
log "end-to-end tests against the release binaries"
EMBEDFN_BIN="$CARGO_TARGET_DIR/release/embedfn" \
EMBEDFN_HOST_BIN="$CARGO_TARGET_DIR/release/embedfn-host" \
EMBEDFN_COMPONENT="$CARGO_TARGET_DIR/wasm32-wasip2/wasm/embedfn_spin_nn.wasm" \
EMBEDFN_TRACT_COMPONENT="$CARGO_TARGET_DIR/wasm32-wasip2/wasm/embedfn_spin_tract.wasm" \
  "$PY" -m pytest tests -q -p no:cacheprovider "$@"
