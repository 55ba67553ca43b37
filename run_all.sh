#!/usr/bin/env bash
# Regenerate every table and figure: bootstrap .venv if needed, then execute notebooks/ in order
# with papermill into results/<profile>/. Usage: ./run_all.sh [--profile demo|tcga] [-p NAME VALUE]...
# ./run_all.sh --help lists the options; ./run_all.sh --list the notebooks and their parameters.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/bootstrap.sh
# Quieter executed notebooks: progress bars redraw at most every 10 s, no ipywidgets hint.
# No MPLBACKEND here: the kernels keep their inline backend, so executed notebooks show figures.
export TQDM_MININTERVAL=10 PYTHONWARNINGS="ignore::FutureWarning,ignore:IProgress not found"
exec .venv/bin/python -m wsigraph.pipeline "$@"
