#!/usr/bin/env bash
# Writes attention-fused copies of a model's ONNX files (onnx/<stem>.fused.onnx beside each
# onnx/model*.onnx; see scripts/fuse_attention.py), which embedfn then prefers.
#   optimize-model.sh MODEL_DIR_OR_ONNX_FILE...
source "$(dirname "$0")/lib.sh"
ensure_venv
exec "$PY" "$ROOT/scripts/fuse_attention.py" "$@"
