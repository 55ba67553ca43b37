#!/usr/bin/env bash
# The test command: bootstrap .venv if needed, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest --durations=10 "$@"
