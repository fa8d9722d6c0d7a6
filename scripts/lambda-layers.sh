#!/usr/bin/env bash
# Builds the two Lambda layers template.yaml deploys with the zip package:
#   build/lambda/onnxruntime-layer/lib/libonnxruntime.so.<ver>  (from the onnxruntime wheel for
#                                     the function's architecture: scripts/fetch-onnxruntime.sh)
#   build/lambda/models-layer/models/<name>/                    (a model directory)
# Layers land under /opt in the function, where embedfn looks for the library (/opt/lib) and
# where the template points EMBEDDINGS_MODEL_ID (/opt/models/minilm by default).
#
#   scripts/lambda-layers.sh [x86_64|arm64] [MODEL_DIR ...]
# Without MODEL_DIR it packs the all-MiniLM-L6-v2 int8 model that scripts/fetch-test-models.sh
# fetches (23 MB: inside the zip limit and Lambda's 10 s init budget). LAMBDA_LAYERS_DIR puts the
# layers elsewhere (scripts/test.sh builds the arm64 ones that tests/test_arm64.py runs on).
source "$(dirname "$0")/lib.sh"
arch="${1:-x86_64}"; shift || true
case "$arch" in
  x86_64|arm64) ;;
  *) echo "architecture must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
out="${LAMBDA_LAYERS_DIR:-$ROOT/build/lambda}"
ort="$out/onnxruntime-layer/lib"
rm -rf "$out"; mkdir -p "$ort" "$out/models-layer/models"

log "onnxruntime==$ORT_VERSION for $arch"
cp "$("$ROOT/scripts/fetch-onnxruntime.sh" "$arch")" "$ort/"

if [ "$#" -eq 0 ]; then set -- "$("$ROOT/scripts/fetch-test-models.sh")/minilm"; fi
for dir in "$@"; do
  [ -f "$dir/tokenizer.json" ] || { echo "$dir: not a model directory (no tokenizer.json)" >&2; exit 1; }
  log "model $(basename "$dir")"
  cp -rL "$dir" "$out/models-layer/models/$(basename "$dir")"
  rm -f "$out/models-layer/models/$(basename "$dir")/.complete"
done
du -sh "$out"/* >&2
