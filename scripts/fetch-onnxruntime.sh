#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library from the `onnxruntime` wheel on PyPI into the cache
# (embedfn's `ort` is built with load-dynamic and finds it there, or via ORT_DYLIB_PATH).
# Prints the library's path. Idempotent.
source "$(dirname "$0")/lib.sh"
dest="$EMBEDFN_CACHE/onnxruntime/$ORT_VERSION"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$lib" ]; then
  log "fetching onnxruntime==$ORT_VERSION from PyPI"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "onnxruntime==$ORT_VERSION" -d "$tmp"
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
