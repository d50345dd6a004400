#!/usr/bin/env bash
# Offline analysis for the 1.3B curriculum recipes: vocab rarity of every sample of the one-epoch training split
# (same data, split, seed and sequence length as gpt_1.3b_launch.sh), written to data/analysis_gpt_1epoch/, where
# the gpt_1.3b_cl_*vocab_rarity*.json configs look for it. Map/reduce over several machines: pass
# --task map --num-workers W --worker-id w on each, then --task reduce once (see tools/analyze_data.py).
#
#   DATA_PATH=data/pile_text_document bash examples/curriculum/analyze_gpt_1.3b.sh [--num-threads 32]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA_PATH=${DATA_PATH:-data/pile_text_document}
"$PY" tools/analyze_data.py \
  --data-path "$DATA_PATH" --tokenizer-type GPT2BPETokenizer --split 949,50,1 --seq-length 2048 --seed 1234 \
  --metrics vocab_rarity --save-path data/analysis_gpt_1epoch "$@"
