#!/usr/bin/env bash
# The benchmark command: embedfn (native server, Lambda path, Wasm host) against the ONNX Runtime floor
# and two Python servers (seed-style and batched) on the same models and inputs, one invocation
# on one machine. Does all set-up first: ONNX Runtime, the test models, its own Python venv
# ($EMBEDFN_CACHE/bench-venv), the release binary (cargo build, or EMBEDFN_BIN to use a built
# one as is). Arguments go to bench/bench.py: --quick (about a minute), --out DIR (default
# $EMBEDFN_CACHE/bench: bench-results.json and bench-results.png).
source "$(dirname "$0")/lib.sh"
BENCH_VENV="$EMBEDFN_CACHE/bench-venv"
BENCH_PY="$BENCH_VENV/bin/python"

# Creates (once per requirements change) the venv with the test and benchmark packages.
ensure_bench_venv() {
  local stamp="$BENCH_VENV/.requirements.sha256" want
  want="$(cat "$ROOT/tests/requirements.txt" "$ROOT/bench/requirements.txt" | sha256sum | cut -d' ' -f1)"
  if [ -x "$BENCH_PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  log "creating the benchmark's Python venv at $BENCH_VENV"
  python3 -m venv "$BENCH_VENV"
  "$BENCH_PY" -m pip install -q --disable-pip-version-check \
    -r "$ROOT/tests/requirements.txt" -r "$ROOT/bench/requirements.txt"
  echo "$want" > "$stamp"
}

ensure_bench_venv
ort_lib="$("$ROOT/scripts/fetch-onnxruntime.sh")"
models="$("$ROOT/scripts/fetch-test-models.sh")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
if [ -z "${EMBEDFN_BIN:-}" ]; then
  log "building the release binaries (embedfn, embedfn-host, the embedfn-spin component)"
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd "$ROOT" && cargo build --release -p embedfn-lambda --bin embedfn && cargo build --release -p embedfn-host)
  EMBEDFN_BIN="$CARGO_TARGET_DIR/release/embedfn"
  EMBEDFN_HOST_BIN="$CARGO_TARGET_DIR/release/embedfn-host"
  EMBEDFN_TRACT_COMPONENT="$("$ROOT/scripts/build-component.sh" tract)"
  EMBEDFN_COMPONENT="$("$ROOT/scripts/build-component.sh" wasi-nn)"
fi
wasm=()
if [ -n "${EMBEDFN_HOST_BIN:-}" ] && [ -n "${EMBEDFN_COMPONENT:-}" ]; then
  wasm=(--host-binary "$EMBEDFN_HOST_BIN" --component "$EMBEDFN_COMPONENT")
fi
if [ -n "${EMBEDFN_HOST_BIN:-}" ] && [ -n "${EMBEDFN_TRACT_COMPONENT:-}" ]; then
  wasmtime="$("$BENCH_PY" -c 'import wasmtime_cli, pathlib; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')"
  chmod +x "$wasmtime"
  wasm+=(--tract-component "$EMBEDFN_TRACT_COMPONENT" --wasmtime "$wasmtime")
fi
log "benchmarking $EMBEDFN_BIN ${wasm[*]}"
exec "$BENCH_PY" "$ROOT/bench/bench.py" --binary "$EMBEDFN_BIN" --ort-lib "$ort_lib" --models "$models" \
  "${wasm[@]}" "$@"
