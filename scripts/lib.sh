# Shared by the scripts: the cache directory outside the clone, and a pinned Python venv.
# Source it; it defines EMBEDFN_CACHE, VENV and PY.
set -euo pipefail
EMBEDFN_CACHE="${EMBEDFN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embedfn}"
export EMBEDFN_CACHE
VENV="$EMBEDFN_CACHE/venv"
PY="$VENV/bin/python"
# The pinned ONNX Runtime; scripts/bench.sh --ort-version V compares another one.
ORT_VERSION="${ORT_VERSION:-1.31.1}"
export ORT_VERSION
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Each line says how long the calling script has run (SECONDS: bash's own clock).
log() { printf '\033[1m[embedfn %dm%02ds]\033[0m %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

# Creates (once per lock change) a venv from a hash-locked requirements file: every package,
# transitive ones included, at the version and hashes in the lock. tests/requirements.txt names
# what the tests use; the locks are made from it (and bench/requirements.txt) with
#   uv pip compile --generate-hashes --universal --python-version 3.11 \
#     tests/requirements.txt -o tests/requirements.lock
#   uv pip compile --generate-hashes --universal --python-version 3.11 \
#     tests/requirements.txt bench/requirements.txt -o bench/requirements.lock
locked_venv() {  # locked_venv VENV LOCKFILE
  local venv="$1" lock="$2" stamp="$1/.requirements.sha256" want
  want="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  log "creating Python venv at $venv from ${lock#"$ROOT"/}"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: the lock lists every package, transitive ones included, at one version each.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  echo "$want" > "$stamp"
}

# The test and reference packages.
ensure_venv() { locked_venv "$VENV" "$ROOT/tests/requirements.lock"; }
