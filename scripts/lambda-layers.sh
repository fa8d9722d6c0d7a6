#!/usr/bin/env bash
# Builds the two Lambda layers template.yaml deploys with the zip package:
#   build/lambda/onnxruntime-layer/lib/libonnxruntime.so.<ver>  (from the onnxruntime wheel for
#                                                               the function's architecture)
#   build/lambda/models-layer/models/<name>/                    (a model directory)
# Layers land under /opt in the function, where embedfn looks for the library (/opt/lib) and
# where the template points EMBEDDINGS_MODEL_ID (/opt/models/minilm by default).
#
#   scripts/lambda-layers.sh [x86_64|arm64] [MODEL_DIR ...]
# Without MODEL_DIR it packs the all-MiniLM-L6-v2 int8 model that scripts/fetch-test-models.sh
# fetches (23 MB: inside the zip limit and Lambda's 10 s init budget).
source "$(dirname "$0")/lib.sh"
arch="${1:-x86_64}"; shift || true
case "$arch" in
  x86_64) platform=manylinux_2_28_x86_64 ;;
  arm64) platform=manylinux_2_28_aarch64 ;;
  *) echo "architecture must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
out="$ROOT/build/lambda"
ort="$out/onnxruntime-layer/lib"
rm -rf "$out"; mkdir -p "$ort" "$out/models-layer/models"

log "onnxruntime==$ORT_VERSION for $arch"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform "$platform" --python-version 3.11 "onnxruntime==$ORT_VERSION" -d "$tmp"
python3 - "$tmp"/onnxruntime-*.whl "$ort" "$ORT_VERSION" <<'PY'
import sys, zipfile, pathlib
wheel, dest, version = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    name = f"onnxruntime/capi/libonnxruntime.so.{version}"
    (dest / pathlib.Path(name).name).write_bytes(z.read(name))
PY

if [ "$#" -eq 0 ]; then set -- "$("$ROOT/scripts/fetch-test-models.sh")/minilm"; fi
for dir in "$@"; do
  [ -f "$dir/tokenizer.json" ] || { echo "$dir: not a model directory (no tokenizer.json)" >&2; exit 1; }
  log "model $(basename "$dir")"
  cp -rL "$dir" "$out/models-layer/models/$(basename "$dir")"
  rm -f "$out/models-layer/models/$(basename "$dir")/.complete"
done
du -sh "$out"/* >&2
