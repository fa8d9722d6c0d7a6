#!/usr/bin/env bash
# Builds the embedfn-spin component and prints its path:
#   scripts/build-component.sh tract    the tract build (model inside; stock Spin / wasmtime serve)
#                                       -> <target>/wasm32-wasip2/wasm/embedfn_spin_tract.wasm
#   scripts/build-component.sh wasi-nn  the wasi:nn build (embedfn-host)
#                                       -> <target>/wasm32-wasip2/wasm/embedfn_spin_nn.wasm
# (cargo's own output, embedfn_spin.wasm, is whichever was built last: use these copies.)
# Both use the size-optimised `wasm` profile and simd128 (.cargo/config.toml).
source "$(dirname "$0")/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"
cd "$ROOT"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
out="$CARGO_TARGET_DIR/wasm32-wasip2/wasm"
case "${1:-wasi-nn}" in
  tract)
    cargo build --profile wasm -p embedfn-spin --target wasm32-wasip2 --no-default-features --features tract >&2
    cp "$out/embedfn_spin.wasm" "$out/embedfn_spin_tract.wasm"
    echo "$out/embedfn_spin_tract.wasm" ;;
  wasi-nn)
    cargo build --profile wasm -p embedfn-spin --target wasm32-wasip2 >&2
    cp "$out/embedfn_spin.wasm" "$out/embedfn_spin_nn.wasm"
    echo "$out/embedfn_spin_nn.wasm" ;;
  *) echo "usage: $0 tract|wasi-nn" >&2; exit 2 ;;
esac
