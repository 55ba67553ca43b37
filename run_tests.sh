#!/usr/bin/env bash
# The test command: bootstrap .venv if needed, then run the test suite. Extra arguments go to pytest
# (they come last, so "-n 0" runs in one process, "-n 4" on four workers).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
export MPLBACKEND=Agg
# One pytest-xdist worker per core (at most 4), each test process and the kernels and fold workers
# it starts limited to cores / workers threads: on 2 cores, two workers whose torch threads spin
# against each other cost more CPU than they save (829 against 512 CPU-seconds measured).
cores=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)')
workers=${WSIGRAPH_TEST_WORKERS:-$((cores < 4 ? cores : 4))}
threads=$((cores / (workers > 0 ? workers : 1)))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((threads > 0 ? threads : 1))}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$OMP_NUM_THREADS}
if [ "$workers" -le 1 ]; then workers=0; fi  # one core: no worker processes at all
exec .venv/bin/python -m pytest -n "$workers" --durations=10 "$@"
