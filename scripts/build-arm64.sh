#!/usr/bin/env bash
# Cross-builds the `embedfn` binary for aarch64 (AWS Lambda arm64, Graviton) with plain cargo,
# after installing what the build and its emulated tests need; each step is skipped when done:
#   Debian packages gcc-aarch64-linux-gnu + libc6-dev-arm64-cross (the cross linker and the
#     aarch64 glibc that .cargo/config.toml names) and qemu-user (qemu-aarch64, for the tests);
#   the Rust target aarch64-unknown-linux-gnu (rustup);
#   the aarch64 libonnxruntime from the onnxruntime wheel (scripts/fetch-onnxruntime.sh arm64).
#
#   scripts/build-arm64.sh [PROFILE]
# PROFILE is a cargo profile: `release` (default, what to deploy) or `arm64-test` (release
# at opt-level 1 without LTO, what scripts/test.sh builds: cheaper to compile, same numbers).
# Code is generated for a Neoverse N1 (Graviton2, the oldest CPU Lambda arm64 runs on), as
# cargo-lambda (`sam build`) does for arm64.
# Prints the binary's path, $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/<dir>/embedfn.
source "$(dirname "$0")/lib.sh"
profile="${1:-release}"
target=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EMBEDFN_CACHE/target}"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; do
  installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || {
    echo "needs the Debian/Ubuntu packages ${missing[*]} (an aarch64 cross gcc + glibc, qemu-aarch64)" >&2
    exit 1
  }
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
"$ROOT/scripts/fetch-onnxruntime.sh" arm64 >/dev/null

log "embedfn for $target (profile $profile)"
cd "$ROOT"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS:--C target-cpu=neoverse-n1}" \
  cargo build --profile "$profile" --target "$target" --bin embedfn >&2
dir="$profile"; [ "$profile" = dev ] && dir=debug
echo "$CARGO_TARGET_DIR/$target/$dir/embedfn"
