#!/usr/bin/env bash
# Re-resolve requirements.in into requirements.lock (exact pins, every platform) and
# environment.yml. Run by a maintainer when a dependency changes; the bootstrap only reads the lock.
#
# The lock is universal (uv pip compile --universal): one file whose platform-specific pins carry
# environment markers, so Linux x86-64 gets the CUDA 13 wheels (nvidia-*, cuda-toolkit, triton:
# sys_platform == 'linux') and macOS arm64 the same versions of everything else. The current
# pins are the constraints, so re-locking adds or drops packages without moving the others;
# delete requirements.lock first to re-resolve everything to today's releases.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet uv 2>&1 | sed "/is ignored: it is neither/d"
constraints=()
if [ -f requirements.lock ]; then
  grep -v '^#' requirements.lock > "$tmp/constraints.txt"  # markers kept: a package pinned per Python version has two lines
  constraints=(-c "$tmp/constraints.txt")
fi
"$tmp/venv/bin/uv" pip compile requirements.in --universal --python-version 3.11.7 \
  "${constraints[@]}" --no-header --no-annotate --quiet -o "$tmp/lock.txt"
{
  echo "# Exact pins resolved from requirements.in by scripts/lock.sh (uv pip compile --universal,"
  echo "# Python 3.11): Linux x86-64 and macOS 14+ on arm64 read the same file; the CUDA wheels carry"
  echo "# sys_platform == 'linux'. environment.yml carries the same pins (tests/test_packaging.py)."
  cat "$tmp/lock.txt"
} > requirements.lock
{
  echo "# Conda-style description of the same environment; the pip section is requirements.lock."
  echo "# ./run_all.sh and ./run_tests.sh do not need conda: they build .venv from requirements.lock."
  echo "name: wsigraph"
  echo "channels:"
  echo "  - conda-forge"
  echo "dependencies:"
  echo "  - python=3.11"
  echo "  - pip"
  echo "  - pip:"
  grep -v '^#' requirements.lock | sed 's/^/      - /'
  echo "      - -e ."
} > environment.yml
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) pins) and environment.yml"
