#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library from the `onnxruntime` wheel on PyPI into the cache
# (embedfn's `ort` is built with load-dynamic and finds it there, or via ORT_DYLIB_PATH).
# Prints the library's path. Idempotent.
#
#   scripts/fetch-onnxruntime.sh [x86_64|arm64]
# Without an argument: this machine's architecture, in $EMBEDFN_CACHE/onnxruntime/<version>/
# (where embedfn looks). Another architecture goes to onnxruntime/<version>-<arch>/ (the
# aarch64 library that tests/test_arm64.py runs under qemu, and the Lambda layer's).
source "$(dirname "$0")/lib.sh"
arch="${1:-$(uname -m)}"
case "$arch" in
  x86_64|amd64) arch=x86_64 ;;
  arm64|aarch64) arch=aarch64 ;;
  *) echo "architecture must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
dest="$EMBEDFN_CACHE/onnxruntime/$ORT_VERSION"
[ "$arch" = "$(uname -m)" ] || dest="$dest-$arch"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$lib" ]; then
  log "fetching onnxruntime==$ORT_VERSION ($arch) from PyPI"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "manylinux_2_28_$arch" --python-version 3.11 "onnxruntime==$ORT_VERSION" -d "$tmp"
  mkdir -p "$dest"
  python3 - "$tmp"/onnxruntime-*.whl "$dest" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime") and ".so" in name:
            (dest / pathlib.Path(name).name).write_bytes(z.read(name))
PY
  [ -f "$lib" ] || { echo "no libonnxruntime.so.$ORT_VERSION in the wheel" >&2; exit 1; }
fi
echo "$lib"
