#!/usr/bin/env bash
# Hugging Face export of a GPT checkpoint, then zero-shot evaluation with lm-evaluation-harness.
#
#   bash examples/quickstart_cpu.sh                 # first: a GPT checkpoint in runs/quickstart_cpu/checkpoints
#   bash examples/convert_to_hf.sh [CHECKPOINT_DIR] [lm_eval tasks, default lambada_openai]
#
# Writes runs/hf_export/hf (GPT2LMHeadModel + GPT-2 tokenizer files; replaced on each run), checks that it loads
# with transformers, then runs lm_eval on it. The evaluation downloads its data sets from the Hugging Face hub;
# the paper's 19 zero-shot tasks are the comma-separated list in README.md. Needs `pip install transformers
# "lm-eval[hf]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CKPT=${1:-runs/quickstart_cpu/checkpoints}
TASKS=${2:-lambada_openai}
OUT=runs/hf_export
[ -f "$CKPT/latest_checkpointed_iteration.txt" ] || {
  echo "no checkpoint in $CKPT: run 'bash examples/quickstart_cpu.sh' first" >&2; exit 2; }
rm -rf "$OUT/hf"
mkdir -p "$OUT"
"$PY" tools/checkpoint/convert.py --model-type GPT --loader megatron --saver hf --load-dir "$CKPT" --save-dir "$OUT/hf"
"$PY" - "$OUT/hf" <<'PYEOF'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model, tok = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("In the beginning", return_tensors="pt").input_ids
print(type(model).__name__, "->", tok.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0]))
PYEOF
"$PY" -m lm_eval --model hf --model_args "pretrained=$OUT/hf,dtype=float32" --tasks "$TASKS" --num_fewshot 0 \
  --batch_size 8 --device cpu --output_path "$OUT/lm_eval"
