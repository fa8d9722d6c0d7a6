#!/usr/bin/env bash
# Makes the full-size benchmark models (seeded random weights, real architecture; see
# tests/fixtures/scale.py) and their variants, cached under $EMBEDFN_CACHE/models/, then prints
# that directory. Never run by the test command.
#   make-scale-models.sh [--models "jina-v3-scale jina-reranker-scale jina-v5-small-scale qwen3-reranker-scale"]
#                        [--variants "fp16 int8 ..."]
# Variants: fp16 int8 uint8 quantized q4 bnb4 (ONNX Runtime's own tools, tests/fixtures/variants.py)
# and fused (scripts/fuse_attention.py: onnx/<stem>.fused.onnx beside each file). Each step runs
# in its own process, one at a time (quantizing the 2.3 GB model needs a few GB of memory), and
# is skipped when its output exists. Logs go to stderr.
source "$(dirname "$0")/lib.sh"
ensure_venv
models="jina-v3-scale jina-reranker-scale"
variants="fused fp16 int8 uint8 quantized q4 bnb4"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out="$EMBEDFN_CACHE/models"
want="$(cat "$ROOT"/tests/fixtures/{encoder,make_fixtures,scale,decoder,decoder_dirs}.py | sha256sum | cut -d' ' -f1)"
for m in $models; do
  d="$out/$m"
  if [ "$(cat "$d/.generator.sha256" 2>/dev/null)" != "$want" ]; then
    log "making $m (full size, seeded weights) in $d"
    rm -rf "$d"
    "$PY" "$ROOT/tests/fixtures/scale.py" "$out" "$m" >&2
    echo "$want" > "$d/.generator.sha256"
  fi
  for v in $variants; do
    [ "$v" = fused ] && continue
    [ -f "$d/onnx/model_$v.onnx" ] && continue
    log "$m: model_$v.onnx"
    "$PY" "$ROOT/tests/fixtures/variants.py" "$d/onnx" "$v" 2>&1 | grep -v "pre-processing before quantization" >&2
  done
  if [[ " $variants " == *" fused "* ]]; then
    for f in "$d"/onnx/model*.onnx; do
      case "$f" in *.fused.onnx) continue ;; esac
      fused="${f%.onnx}.fused.onnx"
      [ -f "$fused" ] || "$PY" "$ROOT/scripts/fuse_attention.py" "$f" >&2
    done
  fi
done
echo "$out"
