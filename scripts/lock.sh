#!/usr/bin/env bash
# Re-resolve requirements.in into requirements.lock (exact pins) and environment.yml.
# Run by a maintainer when a dependency changes; the bootstrap only ever reads the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$tmp/venv/bin/pip" install --quiet -r requirements.in
{
  echo "# Exact pins resolved from requirements.in by scripts/lock.sh on Python 3.11 (linux x86_64)."
  echo "# environment.yml carries the same pins; tests/test_packaging.py checks that they agree."
  "$tmp/venv/bin/pip" freeze --exclude-editable | LC_ALL=C sort -f
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
