#!/usr/bin/env bash
# Issue 21's GPU checks in one command, for a machine with CUDA (a few minutes on an H100):
#   1. the tests that compare CUDA with the CPU (-m gpu) and the attention kernel's and RAConv's
#      tests, with the Triton kernel compiled for the GPU (not interpreted);
#   2. the benchmarks on CUDA, side by side in one process each: the attention op
#      (benchmarks/attention_op.py), RAConv against the official E x N formulation and PyG
#      GATConv (benchmarks/attention.py), one HIGT training step (benchmarks/higt.py). They
#      write results/benchmarks/*_cuda.json.
#
# It uses .venv when there is one, else the machine's python3 (a GPU image that has torch, PyG,
# scikit-learn and timm but nothing can be installed from the network), with the library read
# from lib/. Packages such an image lacks travel as wheels in .whl/ (ignored by git):
#   scripts/gpu_checks.sh --wheels     # here, where pip reaches the package index: fills .whl/
#   scripts/gpu_checks.sh              # there: installs .whl/*.whl, then runs the checks
# With $OUT set (the device tool's output folder) the JSON records and the log are copied there.
# Exit status: 0 when every check passed, 1 when one failed, 2 without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."

# the library's imports that a GPU image lacks (versions from requirements.lock when it has a
# wheel for them; imagecodecs is not needed: the test slides are zlib-compressed)
WHEELS=(openslide-python openslide-bin lifelines autograd autograd-gamma shapely)
TARGET_PYTHON=${TARGET_PYTHON:-3.12}

if [ "${1:-}" = "--wheels" ]; then
  mkdir -p .whl
  for pkg in "${WHEELS[@]}"; do
    pin=$(grep -i "^${pkg}==" requirements.lock | head -1 | sed 's/ *;.*//' || true)
    args=(--quiet --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON"
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any -d .whl)
    python3 -m pip download "${args[@]}" "${pin:-$pkg}" 2>/dev/null ||
      python3 -m pip download "${args[@]}" "$pkg"  # the pinned version has no such wheel
  done
  ls -1 .whl
  exit 0
fi

PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
log=$(mktemp)
"$PY" - <<'EOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_checks: no CUDA device here; run this on a GPU machine")
p = torch.cuda.get_device_properties(0)
print(f"gpu_checks: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")
EOF

failed=()
run() {  # run a check, keep going when it fails, name it at the end
  echo "gpu_checks: $*" | tee -a "$log"
  if ! "$@" 2>&1 | tee -a "$log"; then failed+=("$*"); fi
}
GPU_TESTS=(tests/test_attention.py tests/test_raconv.py tests/test_features.py
  tests/test_baselines.py tests/test_abignet.py tests/test_abignet_official.py
  tests/test_nuclei_gcn.py)
run "$PY" -m pytest -q -p no:cacheprovider -n 0 --durations=10 -m gpu "${GPU_TESTS[@]}"
run "$PY" -m pytest -q -p no:cacheprovider -n 0 tests/test_attention.py tests/test_raconv.py
for bench in attention_op attention higt; do
  run timeout 300 "$PY" "benchmarks/$bench.py"
done
if [ -n "${OUT:-}" ]; then
  cp results/benchmarks/*_cuda.json results/benchmarks/attention_op.json "$OUT"/ 2>/dev/null || true
  cp "$log" "$OUT/gpu_checks.log"
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'gpu_checks: FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "gpu_checks: every check passed"
