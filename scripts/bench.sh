#!/usr/bin/env bash
# The benchmark command: embedfn (native server, Lambda path, Wasm host) against the ONNX Runtime floor
# and two Python servers (seed-style and batched) on the same models and inputs, one invocation
# on one machine. Does all set-up first: ONNX Runtime, the test models, its own Python venv
# ($EMBEDFN_CACHE/bench-venv), the release binary (cargo build, or EMBEDFN_BIN to use a built
# one as is). Arguments go to bench/bench.py: --quick (about a minute), --out DIR (default
# $EMBEDFN_CACHE/bench: bench-results.json and bench-results.png).
#
# Scale section (separate run; the default run above is unchanged):
#   bench.sh --scale [--scale-models "jina-v3-scale jina-reranker-scale"]
#                    [--scale-variants "fp32 fp32-fused fp16 int8 uint8 quantized q4 bnb4"]
#                    [--scale-lengths "128 512 2048 8192"] [--scale-contenders "embedfn,floor (ORT session.run),seed-style Python"]
#                    [--requests N] [--cuda] [--batch N] [--max-batch-size N] [--ort-lib LIB] [--out DIR]
#                    [--no-layer] [--layer-plain-max N]   (the one-layer plain/fused comparison)
# makes the full-size models first (scripts/make-scale-models.sh, cached under
# $EMBEDFN_CACHE/models) and runs bench/scale.py: bench-scale.json and a table. With EMBEDFN_BIN
# set and --ort-lib (e.g. onnxruntime-gpu's libonnxruntime.so with --cuda) nothing is built.
#
# Another ONNX Runtime: bench.sh --ort-version 1.32.0 [...] runs embedfn on that version's library
# and the Python contenders (the floor included) on that version's package, installed beside the
# locked venv ($EMBEDFN_CACHE/onnxruntime-py/<version>, on PYTHONPATH): ratios on one version.
#
# Lambda Managed Instances section (separate run): bench.sh --lambda-concurrency
#   [--concurrency "1 4 8"] [--invocations N] [--model minilm] [--out DIR]
# runs bench/lambda_concurrency.py: one execution environment at N invocations in flight.
# Lambda start section: bench.sh --lambda-start --model DIR [--quantization int8] [--memory-mb MB]
# runs bench/lambda_start.py: start to first answer with an empty cache, a baked cache, and after
# the SnapStart warm-up.
if [ "${1:-}" = "--ort-version" ]; then
  export ORT_VERSION="$2"
  shift 2
fi
source "$(dirname "$0")/lib.sh"
BENCH_VENV="$EMBEDFN_CACHE/bench-venv"
BENCH_PY="$BENCH_VENV/bin/python"

# The test and benchmark packages (bench/requirements.lock: see lib.sh).
locked_venv "$BENCH_VENV" "$ROOT/bench/requirements.lock"
if ! grep -q "^onnxruntime==$ORT_VERSION " "$ROOT/bench/requirements.lock"; then
  ort_py="$EMBEDFN_CACHE/onnxruntime-py/$ORT_VERSION"
  if [ ! -d "$ort_py/onnxruntime" ]; then
    log "installing the onnxruntime==$ORT_VERSION package for the Python contenders"
    "$BENCH_PY" -m pip install -q --disable-pip-version-check --no-deps --target "$ort_py" \
      "onnxruntime==$ORT_VERSION"
  fi
  export PYTHONPATH="$ort_py${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "${1:-}" = "--scale" ]; then
  shift
  args=() ort_lib="" scale_models="jina-v3-scale jina-reranker-scale" scale_variants="" layer=1 plain_max=8192
  out="$EMBEDFN_CACHE/bench"
  while [ $# -gt 0 ]; do
    case "$1" in
      --ort-lib) ort_lib="$2"; shift 2 ;;
      --no-layer) layer=0; shift ;;
      --layer-plain-max) plain_max="$2"; shift 2 ;;
      --out) out="$2"; args+=("$1" "$2"); shift 2 ;;
      --scale-models) scale_models="$2"; args+=("$1" "$2"); shift 2 ;;
      --scale-variants) scale_variants="$2"; args+=("$1" "$2"); shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [ -n "$ort_lib" ] || ort_lib="$("$ROOT/scripts/fetch-onnxruntime.sh")"
  make_variants="fused fp16 int8 uint8 quantized q4 bnb4"
  if [ -n "$scale_variants" ]; then  # only the files the chosen variants need
    make_variants="$(echo " $scale_variants " | sed 's/ fp32-fused / fused /; s/ fp32 / /')"
  fi
  scale_dir="$("$ROOT/scripts/make-scale-models.sh" --models "$scale_models" --variants "$make_variants")"
  if [ -z "${EMBEDFN_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
    (cd "$ROOT" && cargo build --release --bin embedfn)
    EMBEDFN_BIN="$CARGO_TARGET_DIR/release/embedfn"
  fi
  if [ "$layer" = 1 ]; then
    log "one jina-v3-sized layer, plain vs fused attention (bench/attention_layer.py)"
    mkdir -p "$out"
    "$BENCH_PY" "$ROOT/bench/attention_layer.py" "$out" --plain-max "$plain_max"
  fi
  log "scale section: $EMBEDFN_BIN on $scale_dir"
  exec "$BENCH_PY" "$ROOT/bench/scale.py" --binary "$EMBEDFN_BIN" --ort-lib "$ort_lib" --models "$scale_dir" "${args[@]}"
fi
ort_lib="$("$ROOT/scripts/fetch-onnxruntime.sh")"
models="$("$ROOT/scripts/fetch-test-models.sh")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
if [ "${1:-}" = "--lambda-concurrency" ] || [ "${1:-}" = "--lambda-start" ]; then
  section="$1"
  shift
  if [ -z "${EMBEDFN_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release)
    EMBEDFN_BIN="$CARGO_TARGET_DIR/release/embedfn"
  fi
  if [ "$section" = --lambda-start ]; then
    exec "$BENCH_PY" "$ROOT/bench/lambda_start.py" --binary "$EMBEDFN_BIN" --ort-lib "$ort_lib" "$@"
  fi
  exec "$BENCH_PY" "$ROOT/bench/lambda_concurrency.py" --binary "$EMBEDFN_BIN" --ort-lib "$ort_lib" \
    --models "$models" "$@"
fi
if [ -z "${EMBEDFN_BIN:-}" ]; then
  log "building the release binaries (embedfn, embedfn-host, the embedfn-spin component)"
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd "$ROOT" && cargo build --release)
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
  [ ${#wasm[@]} -gt 0 ] || wasm=(--host-binary "$EMBEDFN_HOST_BIN")  # it pre-initialises the tract build
  wasm+=(--tract-component "$EMBEDFN_TRACT_COMPONENT" --wasmtime "$wasmtime")
fi
log "benchmarking $EMBEDFN_BIN ${wasm[*]}"
exec "$BENCH_PY" "$ROOT/bench/bench.py" --binary "$EMBEDFN_BIN" --ort-lib "$ort_lib" --models "$models" \
  "${wasm[@]}" "$@"
