#!/usr/bin/env bash
# spin.toml's build command: builds the tract component and pre-initialises it with Wizer
# (embedfn-host snapshot) on the model directories under models/, so `spin up` serves with the
# tokenizer and the optimised tract plan already in the component's memory image.
#   target/spin/embedfn.wasm   (models/minilm by default; SPIN_MODELS="name ..." for others)
source "$(dirname "$0")/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
cd "$ROOT"
component="$(scripts/build-component.sh tract)"
cargo build --release -p embedfn-host >&2
graphs=()
for name in ${SPIN_MODELS:-minilm}; do
  [ -f "models/$name/tokenizer.json" ] || { echo "models/$name: no model directory (see spin.toml)" >&2; exit 1; }
  graphs+=(--graph "$name=$ROOT/models/$name")
done
mkdir -p target/spin
"$CARGO_TARGET_DIR/release/embedfn-host" snapshot "$component" target/spin/embedfn.wasm "${graphs[@]}"
