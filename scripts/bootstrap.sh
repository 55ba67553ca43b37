#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock; called by ./run_all.sh and ./run_tests.sh.
#
# Idempotent: a stamp (sha256 of requirements.lock + pyproject.toml) in .venv records what was
# installed. An unchanged stamp costs one import check (seconds); a changed lock reinstalls.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${WSIGRAPH_PYTHON:-python3}"

stamp_of() { cat "$root/requirements.lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1; }

if ! command -v "$py" >/dev/null 2>&1; then
  echo "bootstrap: '$py' not found; install Python 3.11 or set WSIGRAPH_PYTHON" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "bootstrap: warning: requirements.lock was resolved on Python 3.11; '$py' is $("$py" -V 2>&1)" >&2
fi

want="$(stamp_of)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.wsigraph-stamp" 2>/dev/null)" = "$want" ] \
   && "$venv/bin/python" -c 'import wsigraph' 2>/dev/null; then
  exit 0
fi

echo "bootstrap: installing the environment into .venv (first run or changed lock; a few minutes)"
if [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi
rm -f "$venv/.wsigraph-stamp"
# (Some machines' pip configs name local indexes that may be absent; drop those warnings only.)
pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | sed '/is ignored: it is neither a file nor a directory/d'
}
pip_install -r "$root/requirements.lock"
pip_install --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -m ipykernel install --sys-prefix --name wsigraph --display-name "Python (wsigraph)" >/dev/null
"$venv/bin/python" -c 'import wsigraph, torch, torch_geometric, openslide, papermill' \
  || { echo "bootstrap: the environment was installed but does not import; see the messages above" >&2; exit 1; }
echo "$want" > "$venv/.wsigraph-stamp"
echo "bootstrap: .venv ready ($("$venv/bin/python" -V), torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"
