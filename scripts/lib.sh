# Shared by the scripts: the cache directory outside the clone, and a pinned Python venv.
# Source it; it defines EMBEDFN_CACHE, VENV and PY.
set -euo pipefail
EMBEDFN_CACHE="${EMBEDFN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embedfn}"
export EMBEDFN_CACHE
VENV="$EMBEDFN_CACHE/venv"
PY="$VENV/bin/python"
ORT_VERSION=1.31.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1m[embedfn]\033[0m %s\n' "$*" >&2; }

# Creates (once) the venv with the pinned test and reference packages.
ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$ROOT/tests/requirements.txt" | cut -d' ' -f1)"
  if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  log "creating Python venv at $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
  echo "$want" > "$stamp"
}
